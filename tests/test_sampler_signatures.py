"""One sampler signature (issue 17, item 4): every sampler of the package takes
``(model, schedule, shape, *, steps=..., <its own options>, x_T, generator, model_kwargs, return_trajectory, progress,
device)``, with ``progress`` on by default and the device taken from the model; a sampler that diverges fails here."""

import inspect

import pytest
import torch

from minidiff.diffusion import ddim, ddpm, dpm_solver, flow, score, sde
from minidiff.diffusion.schedules import make_schedule

SAMPLERS = [ddpm.sample, ddim.ddim_sample, dpm_solver.dpmpp_2m_sample, sde.euler_maruyama, sde.pc_sample,
            sde.ode_sample, score.annealed_langevin, flow.flow_sample]
DISCRETE = SAMPLERS[:3]


@pytest.mark.parametrize("fn", SAMPLERS, ids=lambda f: f.__name__)
def test_the_samplers_share_one_signature(fn):
    params = list(inspect.signature(fn).parameters.values())
    names = [p.name for p in params]
    assert names[:3] == ["model", "schedule", "shape"], names
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:3])
    assert all(p.kind is p.KEYWORD_ONLY for p in params[3:]), "everything after shape is keyword-only"
    assert names[3] == "steps"
    assert tuple(names[-len(ddpm.SAMPLER_ARGS):]) == ddpm.SAMPLER_ARGS
    defaults = {p.name: p.default for p in params}
    assert defaults["progress"] is True
    assert all(defaults[n] is None for n in ("x_T", "generator", "model_kwargs", "device"))
    assert defaults["return_trajectory"] is False
    if fn in DISCRETE:
        own = names[4:-len(ddpm.SAMPLER_ARGS)]
        assert own[-2:] == ["prediction", "clip_x0"] or own[-3:-1] == ["prediction", "clip_x0"], own
        assert defaults["prediction"] == "eps" and defaults["clip_x0"] is False


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, scale=1.0):
        return scale * self.w * x


def test_samplers_run_with_the_shared_arguments_and_take_the_device_from_the_model():
    net = _Net()
    sched = make_schedule("linear", 20)
    shape = (3, 2)
    common = dict(x_T=torch.zeros(shape), generator=torch.Generator().manual_seed(0), model_kwargs={"scale": 2.0},
                  return_trajectory=True, progress=False)
    runs = [ddpm.sample(net, sched, shape, **common), ddim.ddim_sample(net, sched, shape, steps=5, **common),
            dpm_solver.dpmpp_2m_sample(net, sched, shape, steps=5, **common),
            sde.euler_maruyama(net, sde.VPSDE(), shape, steps=5, **common),
            sde.pc_sample(net, sde.VPSDE(), shape, steps=5, **common),
            sde.ode_sample(net, sde.VPSDE(), shape, steps=5, **common),
            score.annealed_langevin(net, score.geometric_sigmas(1.0, 0.1, 3), shape, steps=2, **common),
            flow.flow_sample(net, flow.Path("linear"), shape, steps=3, method="heun", **common)]
    for x, traj in runs:
        assert x.shape == shape and x.device == net.w.device and traj and traj[0][1].shape == shape
    with pytest.raises(ValueError, match="ancestral sampling runs all T"):
        ddpm.sample(net, sched, shape, steps=5)
