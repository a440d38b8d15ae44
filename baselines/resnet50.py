"""ResNet-50, ImageNet-1k supervised (torchvision weights as released in timm: resnet50.tv_in1k)."""
from dermbench.models.registry import IMAGENET_MEAN, IMAGENET_STD, BackboneMeta, register_backbone

META = BackboneMeta(
    key="resnet50", architecture="ResNet-50 (torchvision V1 weights)", embed_dim=2048, input_size=224,
    mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_mode="shortest_crop", crop_pct=0.875, interpolation="bilinear",
    token_dim=2048, level_indices=(1, 2, 3, 4), level_channels=(256, 512, 1024, 2048), licence="BSD-3-Clause",
    weights_source="timm resnet50.tv_in1k (= torchvision IMAGENET1K_V1)", hub_id="timm/resnet50.tv_in1k",
    weights_filename="model.safetensors", pretraining_datasets=("ImageNet-1k",),
    global_feature="global average pool of layer4 (2048): torchvision ResNet-50 without fc (timm resnet50 = same keys)",
    preprocessing_source="torchvision ResNet50_Weights.IMAGENET1K_V1 transforms: Resize(256, bilinear) -> CenterCrop(224)",
    citation="He et al., Deep Residual Learning for Image Recognition, CVPR 2016",
)


@register_backbone(META)
def build(weights=None, meta=META):
    from baselines._timm import build_timm_backbone, drop_keys

    # the release carries the 1000-class fc layer; the frozen backbone ends at global pooling
    return build_timm_backbone(meta, "resnet50", weights, kind="cnn", convert=drop_keys(("fc.",)))
