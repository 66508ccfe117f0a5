"""Private shared machinery used by every captum_ext module (never imports the public layers)."""
