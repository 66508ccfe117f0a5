"""Trainable models of the seed papers (``torch.nn.Module`` subclasses)."""
from captum_ext.models import ellipse_regression
from captum_ext.models.roi_attention_resnet import ROIAttentionResNet
from captum_ext.models.self_supervised_attention import LossParts, SelfSupervisedAttentionRegressor

__all__ = ["LossParts", "ROIAttentionResNet", "SelfSupervisedAttentionRegressor", "ellipse_regression"]
