"""``python -m captum_ext …`` runs the ``captum-ext`` command (what ``torchrun -m captum_ext evaluate …`` needs)."""
from captum_ext.cli import command

if __name__ == "__main__":
    command()
