"""Export a trained run as an embedded prior: EMA weights (safetensors) and the model card."""

from __future__ import annotations

from pathlib import Path

from diffinv.checkpoints import git_commit, load_prior, save_prior

VALUE_MAP = "network values x = 2 u / 255 - 1 in [-1, 1] for uint8 pixels u (inverse: u = (x + 1) 127.5)"


def build_card(trainer) -> dict:
    """The model card of a trainer's current EMA weights (figures filled in by the evaluation)."""
    cfg = trainer.config
    sched = trainer.schedule
    log = trainer.log
    return {
        "name": Path(cfg.out).name,
        "architecture": {"name": "UNet", "config": cfg.unet().to_dict(),
                         "parameters": sum(p.numel() for p in trainer.net.parameters())},
        "schedule": {"kind": sched.kind, "num_timesteps": sched.num_timesteps,
                     "beta_start": float(sched.betas[0]), "beta_end": float(sched.betas[-1])},
        "parametrisation": "eps",
        "time_input": "integer t in [0, T-1], the index of alpha_bar[t] (alpha_bar_0 = 1 - beta_0)",
        "data": trainer.data.describe(),
        "image_size": cfg.image_size,
        "channels": cfg.channels,
        "value_range": [-1.0, 1.0],
        "value_map": VALUE_MAP,
        "training": {"steps": trainer.step, "seconds": round(trainer.seconds, 1),
                     "seconds_per_step": round(trainer.seconds / max(trainer.step, 1), 4),
                     "final_loss": log[-1][1] if log else None, "weights": "EMA",
                     "recipe": cfg.to_dict()},
        "seed": cfg.seed,
        "git_commit": git_commit(),
        "figures": None,
    }


def export_prior(trainer) -> Path:
    """Write OUT/model.safetensors + OUT/card.json; with ``config.evaluate`` add the card figures."""
    out = Path(trainer.config.out)
    save_prior(out, trainer.ema.state_dict(), build_card(trainer))
    if trainer.config.evaluate:
        from diffinv.evaluation.card import evaluate_checkpoint
        evaluate_checkpoint(out, num_samples=trainer.config.eval_samples, device=trainer.device,
                            data=trainer.data)
    load_prior(out)  # the exported prior must reload and validate
    return out
