"""Learning-rate schedules: `on_step(optimizer, step, total_steps)` before each optimizer step, and like every
end-of-epoch updater (the dynamic margin, losses/dynamic_margin.py) `on_epoch_end(optimizer, epoch, train_loss, dev)
-> what to log` after each evaluation; `state_dict()` / `load_state_dict()` for resume."""

from minbert.lr_schedules.constant import Constant
from minbert.lr_schedules.plateau import Plateau
from minbert.lr_schedules.warmup_linear import WarmupLinear

LR_SCHEDULES = {"constant": Constant, "plateau": Plateau, "warmup_linear": WarmupLinear}
