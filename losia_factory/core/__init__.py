"""LoSiA in pure PyTorch: subnet localization (importance, greedy selection), schedule, Pro linear, optimizer.

Read top to bottom next to the paper: :mod:`.importance` (Eqs. 3-6), :mod:`.selection` (Eq. 7, Algorithm 1),
:mod:`.schedule` (section 3.3, Eq. 8), :mod:`.functional` (LoSiA-Pro, Eq. 9), :mod:`.subnet`, :mod:`.optimizer`
(Algorithm 2), :mod:`.lr_scheduler`, :mod:`.attach`.
"""

from .attach import (
    LosiaAttachment,
    LosiaLayout,
    attach_losia,
    create_losia_optimizer,
    detach_losia,
    find_attached,
    find_attachment,
    prepare_losia,
)
from .config import LosiaConfig, LosiaConfigError
from .discovery import find_decoder_layers, find_output_layer, find_target_linears, matches_target
from .errors import ConfigError
from .functional import BlockInjectFunction, GradientSink, SubnetLinearFunction
from .importance import ImportanceEMA, sensitivity
from .lr_scheduler import LosiaLRScheduler, base_lr_lambda
from .optimizer import LosiaAdamW
from .schedule import LosiaSchedule
from .selection import block_score, select_block, select_subnet, subnet_size
from .subnet import SubnetTarget

__all__ = [
    "BlockInjectFunction",
    "ConfigError",
    "GradientSink",
    "ImportanceEMA",
    "LosiaAdamW",
    "LosiaAttachment",
    "LosiaConfig",
    "LosiaConfigError",
    "LosiaLRScheduler",
    "LosiaLayout",
    "LosiaSchedule",
    "SubnetLinearFunction",
    "SubnetTarget",
    "attach_losia",
    "base_lr_lambda",
    "block_score",
    "create_losia_optimizer",
    "detach_losia",
    "find_attached",
    "find_attachment",
    "find_decoder_layers",
    "find_output_layer",
    "find_target_linears",
    "matches_target",
    "prepare_losia",
    "select_block",
    "select_subnet",
    "sensitivity",
    "subnet_size",
]
