"""Cheap checks on the driver before any worker starts: bad data or code fails in seconds."""
from __future__ import annotations

from raytrain_eff import catalog
from raytrain_eff.catalog import load_object
from raytrain_eff.config import ExperimentConfig
from raytrain_eff.data.corpus import BUILTIN_CORPORA
from raytrain_eff.data.parquet import DataError, read_schema
from raytrain_eff.data.tabular import BUILTIN_TABULAR


def check(cfg: ExperimentConfig) -> None:
    _check_devices(cfg)
    if cfg.task.name == "custom":
        try:
            load_object(cfg.task.params.factory)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"task.factory '{cfg.task.params.factory}' cannot be imported: "
                             f"{err}") from None
        return
    dataset = cfg.data.dataset
    task_cls = load_object(catalog.lookup(catalog.TASKS, "task", cfg.task.name).impl)
    if not task_cls.reads_dataset or dataset in BUILTIN_CORPORA + BUILTIN_TABULAR:
        return
    schema = read_schema(dataset)  # raises DataError naming the file; reads no rows
    needed = [cfg.data.text_column] if cfg.task.name == "lm" else [cfg.data.label_column]
    for column in needed:
        if column not in schema.names:
            raise DataError(f"{dataset}: missing column '{column}'; columns present: "
                            f"{', '.join(schema.names)}")


def _check_devices(cfg: ExperimentConfig) -> None:
    """Settings that need a GPU fail here, not after the workers have started."""
    for name, params in cfg.methods.items():
        if getattr(params, "attention_kernel", None) == "flex" and not cfg.scaling.use_gpu:
            raise ValueError(f"methods.{name}.attention_kernel=flex needs scaling.use_gpu=true "
                             f"(FlexAttention has no CPU backward); on CPU use tiles")
