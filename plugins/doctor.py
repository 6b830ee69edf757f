"""``trainer.doctor`` (on by default): the conditioning report, logged before the first step.

The diagnosis itself is :func:`framework.doctor.diagnose`; this plugin only decides when it runs
and where it goes: the ``framework`` logger (the console and the run's log file), its warning
with ``log.warning``. Added to a fit only when the setting is on (``framework_fit_plugins``),
so ``trainer.doctor=false`` costs nothing.
"""

import logging

from framework import hookimpl

log = logging.getLogger("framework")


class ConditioningDoctor:
    # trylast: after the other plugins' fit_start, so the report follows the console's
    # "training ... for N steps" line.
    @hookimpl(trylast=True)
    def framework_fit_start(self, state):
        # A resumed fit is not diagnosed again: its log holds the report from its first start,
        # and a resumed run cannot change what the report depends on (data, model, loss,
        # optimizer settings).
        if state.progress.step > 0:
            return
        from framework.doctor import diagnose

        diagnosis = diagnose(state.run)
        for line in diagnosis.lines:
            log.info("%s", line)
        for warning in diagnosis.warnings:
            log.warning("%s", warning)


@hookimpl
def framework_fit_plugins(state):
    return [ConditioningDoctor()] if state.run.trainer.doctor else []
