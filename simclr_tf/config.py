"""Frozen configuration records.

`main.py` is the only reader of absl flags; it fills these records and passes them
down, so every library function takes plain values and can be called from a notebook.
Each flag maps to exactly one field (a test checks the two sets match).
"""

import dataclasses
import json

MODES = ("pretrain", "linear_eval", "finetune", "supervised", "distill", "eval", "export")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("lars", "momentum", "adam")
WEIGHT_DECAY_MODES = ("reference", "decoupled")
LR_SCALINGS = ("linear", "sqrt", "none")
PROJ_HEAD_MODES = ("nonlinear", "linear", "none")
LOSSES = ("nt_xent", "nt_logistic", "margin_triplet")
JITTER_VERSIONS = ("v1", "v2")
RESNET_DEPTHS = (18, 34, 50, 101, 152, 200)


class ConfigError(ValueError):
    """A bad flag value or combination, described in one line."""


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the pretraining views (defaults: the paper's ImageNet setting)."""

    crop: bool = True
    # Side of the pretraining views (0: --image_size). Smaller views cost less per step
    # (the CIFAR stem's work grows with the pixels) and the encoder, fully convolutional,
    # is still evaluated and served at --image_size.
    view_size: int = 0
    area_range: tuple[float, float] = (0.08, 1.0)
    aspect_range: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip: bool = True
    color_jitter_strength: float = 1.0
    color_jitter_prob: float = 0.8
    jitter_version: str = "v2"
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    # The paper's other ablation transforms (off by default).
    rotation_prob: float = 0.0
    cutout_prob: float = 0.0
    noise_prob: float = 0.0
    sobel_prob: float = 0.0
    color_drop_prob: float = 0.0
    # Views made over whole batches (augment/batch_ops.py: same distribution, far fewer
    # ops); images of mixed sizes are cropped one by one first. Off, or with any
    # ablation transform on, every view is made image by image (augment/image_ops.py).
    batched_augment: bool = True
    # The batched views' pixel arithmetic compiled by XLA (fused ops; the random values
    # are drawn outside it, so both settings give the same views up to rounding).
    augment_jit_compile: bool = True

    def view_side(self, image_size):
        return self.view_size or image_size


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    depth: int = 50
    width_multiplier: float = 1.0
    sk_ratio: float = 0.0
    cifar_stem: bool | None = None  # None: decided by image size (<= 32 px).
    sync_bn: bool = False
    bn_momentum: float = 0.9
    matmul_kernel_grad: bool = True
    proj_head_mode: str = "nonlinear"
    num_proj_layers: int = 3
    proj_out_dim: int = 128
    ft_proj_selector: int = 0
    fine_tune_after_block: int = -1
    linear_probe: bool = True


@dataclasses.dataclass(frozen=True)
class LossConfig:
    loss: str = "nt_xent"
    temperature: float = 0.1
    hidden_norm: bool = True
    margin: float = 1.0


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "lars"
    learning_rate: float = 0.3
    lr_scaling: str = "linear"
    warmup_epochs: float = 10.0
    weight_decay: float = 1e-6
    # reference: as google-research/simclr (LARS decays in its update, plus an L2 term
    # on the classifier kernel; other optimizers: an L2 term on every non-BN variable).
    # decoupled: the optimizer alone (LARS in its update, SGD and AdamW decoupled).
    weight_decay_mode: str = "reference"
    momentum: float = 0.9


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar10"
    data_dir: str | None = None
    train_split: str = "train"
    eval_split: str | None = "test"  # None (--eval_split=): no evaluation
    image_size: int = 32
    batch_size: int = 256
    eval_batch_size: int = 256
    label_fraction: float = 1.0
    label_subset: str | None = None  # file of example ids, one per line
    seed: int = 0
    deterministic: bool = False
    cache: bool = False
    strict_decoding: bool = False
    max_image_pixels: int = 2**27  # larger images (by their header) are skipped, not decoded
    shuffle_buffer: int = 10000


@dataclasses.dataclass(frozen=True)
class RunConfig:
    mode: str = "pretrain"
    model_dir: str = "runs/default"
    train_epochs: float = 100.0
    train_steps: int = 0  # > 0 overrides train_epochs.
    time_budget: str | None = None  # "30m", "90s", "2h": plan the steps (time_budget.py)
    checkpoint_steps: int = 500
    keep_checkpoints: int = 3
    init_checkpoint: str | None = None
    allow_random_encoder: bool = False  # linear_eval without --init_checkpoint (the floor)
    strategy: str = "default"
    num_logical_devices: int = 0
    tpu: str | None = None
    precision: str = "auto"  # hardware.py: bf16 only where it is native
    jit_compile: bool = False
    steps_per_execution: int = 0  # 0: auto (training_loop.steps_per_execution_for)
    eval_steps: int = 0  # 0: the whole eval split.
    knn_every_epochs: float = 0.0
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_bank_size: int = 10000
    summary_steps: int = 50
    export_dir: str | None = None
    export_tflite: bool = False  # also the encoder for LiteRT (export_tflite.py)


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """SimCLRv2's distillation step (`--mode=distill`)."""

    teacher: str | None = None  # a classifier run directory or an exported SavedModel
    distill_temperature: float = 1.0  # SimCLRv2: 1 big-to-small, 0.1 self-distillation
    distill_label_weight: float = 0.0  # > 0 adds the cross-entropy on labelled examples


@dataclasses.dataclass(frozen=True)
class Config:
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    augment: AugmentConfig = AugmentConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    distill: DistillConfig = DistillConfig()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def field_names() -> set:
    """All leaf field names; flags use the same names."""
    names = set()
    for section in dataclasses.fields(Config):
        names.update(f.name for f in dataclasses.fields(section.type))
    return names


def from_dict(values: dict) -> Config:
    """Inverse of `dataclasses.asdict` (as in a run's config.json); lists become tuples."""
    sections = {}
    for section in dataclasses.fields(Config):
        raw = values.get(section.name, {})
        known = {f.name for f in dataclasses.fields(section.type)}
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known}
        sections[section.name] = section.type(**fields)
    return Config(**sections)
