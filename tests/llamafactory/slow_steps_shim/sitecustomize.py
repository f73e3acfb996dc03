"""Test-only shim, put on PYTHONPATH for the runs the kill tests send SIGKILL to.

It slows training down once a checkpoint exists, so the kill lands while the run is still training: with
``LOSIA_TEST_STEP_DELAY=<seconds>`` every forward/backward pass (``Trainer.training_step``) from optimizer step
``LOSIA_TEST_DELAY_FROM`` on first sleeps that long. Sleeping changes no value the run computes.
"""

import os
import time

_DELAY = float(os.environ.get("LOSIA_TEST_STEP_DELAY", "0") or 0)

if _DELAY > 0:
    import transformers.trainer

    _FROM = int(os.environ.get("LOSIA_TEST_DELAY_FROM", "0"))
    _original = transformers.trainer.Trainer.training_step

    def _slow_training_step(self, *args, **kwargs):
        if self.state.global_step >= _FROM:
            time.sleep(_DELAY)
        return _original(self, *args, **kwargs)

    transformers.trainer.Trainer.training_step = _slow_training_step
