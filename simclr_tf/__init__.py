"""simclr_tf: SimCLR (v1 and v2) for TensorFlow 2 / Keras 3.

Usage (pretrain a ResNet-18 on CIFAR-10 and export it):

    import simclr_tf as st

    source = st.open_source("cifar10")  # a TFDS name, "folder:PATH" or "tfrecord:GLOB"
    batch, steps, export_dir = 256, 1000, "simclr_export"
    data = st.DataConfig(image_size=32, batch_size=batch)
    augment = st.AugmentConfig(color_jitter_strength=0.5)
    views = st.pretrain_dataset(source, "train", data, augment, batch)
    model = st.PretrainModel(st.resnet(18, cifar_stem=True, input_shape=(32, 32, 3)),
                             st.ProjectionHead(num_layers=2),
                             lambda z1, z2: st.nt_xent(z1, z2, temperature=0.5))
    schedule = st.warmup_cosine(peak_lr=1.0, warmup_steps=steps // 10, total_steps=steps)
    model.compile(optimizer=st.LARS(schedule, weight_decay=1e-6))  # BN and biases not decayed
    model.fit(views, steps_per_epoch=steps, epochs=1)
    st.export_saved_model(model, 32, export_dir)  # serving signatures + a TF Hub module

The whole job as the command line runs it (checkpoints, resume, kNN, results.json):
`st.run(st.Config(run=st.RunConfig(mode="pretrain", model_dir="runs/r18")))`.
Names load on first use, so `import simclr_tf` stays cheap (TensorFlow is imported
by the first name that needs it).
"""

import importlib

from simclr_tf import hardware as _hardware

# Before anything imports TensorFlow: its oneDNN kernels on an AVX2 CPU (hardware.py).
_hardware.use_onednn_on_avx2()

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    **{
        name: "simclr_tf.config"
        for name in (
            "Config",
            "RunConfig",
            "DataConfig",
            "ModelConfig",
            "AugmentConfig",
            "LossConfig",
            "OptimConfig",
            "DistillConfig",
            "ConfigError",
        )
    },
    "run": "simclr_tf.train",
    "TrainingError": "simclr_tf.training_loop",
    "PretrainModel": "simclr_tf.models.step_models",
    "ClassifierModel": "simclr_tf.models.step_models",
    "resnet": "simclr_tf.models.resnet",
    "ProjectionHead": "simclr_tf.models.heads",
    "linear_head": "simclr_tf.models.heads",
    "nt_xent": "simclr_tf.losses",
    "distillation_loss": "simclr_tf.losses",
    "DistillationModel": "simclr_tf.models.distillation",
    "LARS": "simclr_tf.optim.lars",
    "warmup_cosine": "simclr_tf.optim.schedules",
    "open_source": "simclr_tf.data",
    "DataError": "simclr_tf.data",
    "pretrain_dataset": "simclr_tf.data.pipeline",
    "classifier_train_dataset": "simclr_tf.data.pipeline",
    "eval_dataset": "simclr_tf.data.pipeline",
    "two_views": "simclr_tf.augment.image_ops",
    "export_saved_model": "simclr_tf.export",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'simclr_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
