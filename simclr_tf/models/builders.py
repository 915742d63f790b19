"""Builds the models of a run from its `Config` (training and export share this)."""

import functools

import tensorflow as tf

from simclr_tf import losses
from simclr_tf.config import Config
from simclr_tf.models import distillation, heads, resnet, step_models


def build_encoder(config: Config):
    m, size = config.model, config.data.image_size
    cifar_stem = m.cifar_stem if m.cifar_stem is not None else size <= 32
    # Trained on views of another side, it takes any side (it is fully convolutional).
    same = config.augment.view_side(size) == size
    return resnet.resnet(
        m.depth,
        m.width_multiplier,
        m.sk_ratio,
        cifar_stem,
        input_shape=(size, size, 3) if same else (None, None, 3),
        sync_bn=m.sync_bn,
        bn_momentum=m.bn_momentum,
        matmul_kernel_grad=m.matmul_kernel_grad,
        name="encoder",
    )


def build_projection_head(config: Config):
    m = config.model
    return heads.ProjectionHead(
        m.proj_head_mode,
        m.num_proj_layers,
        m.proj_out_dim,
        sync_bn=m.sync_bn,
        bn_momentum=m.bn_momentum,
        name="projection_head",
    )


def contrastive_loss_fn(config: Config):
    c = config.loss
    kwargs = dict(temperature=c.temperature, normalize=c.hidden_norm)
    if c.loss == "margin_triplet":
        kwargs["margin"] = c.margin
    return functools.partial(losses.LOSSES[c.loss], **kwargs)


def _built(model, config: Config):
    """Creates every variable with one call on a dummy batch."""
    size = config.data.image_size
    model(tf.zeros([1, size, size, 3]), training=False)
    return model


def pretrain_model(config: Config, num_classes):
    """`num_classes` > 0 adds the online linear probe."""
    model = step_models.PretrainModel(
        build_encoder(config),
        build_projection_head(config),
        contrastive_loss_fn(config),
        num_classes,
        weight_decay=loss_weight_decay(config),
    )
    return _built(model, config)


def loss_weight_decay(config: Config):
    """The coefficient of the reference's L2 term in the loss: `--weight_decay` as the
    reference applies it, 0 when `--weight_decay_mode=decoupled` leaves decay to the
    optimizer alone."""
    o = config.optim
    return o.weight_decay if o.weight_decay_mode == "reference" else 0.0


def _classifier(cls, config: Config, num_classes, **kwargs):
    """A built `cls` (a ClassifierModel) with the head layer the config selects."""
    m = config.model
    head = build_projection_head(config) if m.ft_proj_selector > 0 else None
    model = cls(
        build_encoder(config),
        num_classes,
        projection_head=head,
        head_layer=m.ft_proj_selector,
        weight_decay=loss_weight_decay(config),
        **kwargs,
    )
    _built(model, config)
    model.freeze_unused_head_layers()
    return model


def classifier_model(config: Config, num_classes):
    mode = config.run.mode
    return _classifier(
        step_models.ClassifierModel,
        config,
        num_classes,
        freeze_encoder=mode == "linear_eval",
        fine_tune_after_block=config.model.fine_tune_after_block if mode == "finetune" else -1,
    )


def distillation_model(config: Config, num_classes, teacher):
    """The student of `--mode=distill`: `classifier_model`'s network trained on
    `teacher`'s (images -> logits) tempered predictions."""
    k = config.distill
    return _classifier(
        distillation.DistillationModel,
        config,
        num_classes,
        teacher=teacher,
        temperature=k.distill_temperature,
        label_weight=k.distill_label_weight,
    )
