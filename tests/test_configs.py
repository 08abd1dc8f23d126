"""Launch configurations: the interpreter's GEMM tiles and the configs an AMD GPU launches."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
import torch
import triton

from alexnet_triton.architecture import CONV_LAYERS
from alexnet_triton.kernels import conv, linear, runtime
from alexnet_triton.study.inspection import cases
from alexnet_triton.study.inspection.compilation import TARGETS
from alexnet_triton.study.registries.gpus import CAPTURED

GEMM_KERNELS = {"conv_forward": conv._conv2d_forward_kernel, "conv_input_grad": conv._conv2d_input_grad_kernel,
                "conv_weight_grad": conv._conv2d_weight_grad_kernel, "linear_forward": linear._linear_forward_kernel,
                "linear_input_grad": linear._linear_input_grad_kernel,
                "linear_weight_grad": linear._linear_weight_grad_kernel}
GEMM_CONFIGS = {"conv_forward": conv.FORWARD_CONFIGS, "conv_input_grad": conv.INPUT_GRAD_CONFIGS,
                "conv_weight_grad": conv.WEIGHT_GRAD_CONFIGS, "linear_forward": linear.FORWARD_CONFIGS,
                "linear_input_grad": linear.INPUT_GRAD_CONFIGS, "linear_weight_grad": linear.WEIGHT_GRAD_CONFIGS}


@pytest.mark.parametrize("rows, cols, reduction", [(1, 1, 1), (17, 5, 3), (4624, 12, 363), (16, 4096, 9216),
                                                    (4096, 9216, 64), (1 << 20, 1 << 20, 1 << 20)])
def test_interpreter_tile_covers_the_problem_up_to_the_caps(rows, cols, reduction):
    tile = runtime.interpreter_gemm_tile(rows, cols, reduction).kwargs
    caps = runtime._INTERPRETER_TILE_CAPS
    limit = caps["tensor_elements"]
    assert tile["BLOCK_M"] * tile["BLOCK_N"] <= limit
    for block, size, cap in ((tile["BLOCK_M"], rows, caps["rows"]), (tile["BLOCK_N"], cols, caps["cols"])):
        assert block >= 16 and block & (block - 1) == 0  # tl.dot needs powers of two >= 16
        assert (block >= min(size, cap) or tile["BLOCK_M"] * tile["BLOCK_N"] == limit) and block <= max(16, 2 * size)
    block_k = tile["BLOCK_K"]
    assert block_k >= 16 and block_k & (block_k - 1) == 0 and block_k <= max(16, 2 * reduction)
    assert max(tile["BLOCK_M"], tile["BLOCK_N"]) * block_k <= limit


@pytest.mark.parametrize("name", GEMM_CONFIGS)
@pytest.mark.parametrize("tensor_cores", [True, False], ids=["tensor-core", "cuda-core"])
def test_amd_launches_the_same_tiles_with_at_most_two_stages(name, tensor_cores):
    configs = GEMM_CONFIGS[name]
    cuda, hip = configs.gpu(tensor_cores, "cuda"), configs.gpu(tensor_cores, "hip")
    assert cuda == (configs.tensor_core if tensor_cores else configs.cuda_core)
    assert len(hip) == len(cuda)
    for amd, nvidia in zip(hip, cuda, strict=True):
        assert amd.kwargs == nvidia.kwargs and amd.num_warps == nvidia.num_warps
        assert amd.num_stages == min(nvidia.num_stages, runtime.HIP_MAX_STAGES)


def test_unknown_gpu_backend_is_rejected():
    with pytest.raises(ValueError, match="'xpu'"):
        conv.FORWARD_CONFIGS.gpu(True, "xpu")


def _captured_arguments() -> dict[str, dict]:
    """The arguments each GEMM kernel is launched with: a conv layer and an fc layer with ReLU and dropout."""
    x, w, b = torch.randn(2, 8, 9, 9), torch.randn(6, 8, 3, 3), torch.randn(6)
    fc_x, fc_w, fc_b = torch.randn(4, 10), torch.randn(12, 10), torch.randn(12)
    with runtime.capture_launches() as launches:
        y = conv.conv2d_forward(x, w, b, relu=True, stride=2, padding=1, groups=1, precision="ieee")
        conv.conv2d_input_grad(y, w, x.shape, stride=2, padding=1, groups=1, precision="ieee")
        conv.conv2d_weight_grad(y, x, w.shape, stride=2, padding=1, groups=1, precision="ieee")
        fc_y = linear.linear_forward(fc_x, fc_w, fc_b, relu=True, dropout=0.5, seed=7, precision="ieee")
        masks = dict(y=fc_y, dropout=0.5, seed=7, precision="ieee")
        linear.linear_input_grad(fc_y, fc_w, **masks)
        linear.linear_weight_grad(fc_y, fc_x, **masks)
    return {launch.kernel.fn.__name__: launch.args for launch in launches}


@pytest.mark.parametrize("name", GEMM_CONFIGS)
def test_autotuning_keys_name_arguments_every_launch_passes(name):
    """Triton's autotuner silently skips key names it is not given: each must be a parameter the launch passes."""
    kernel, key = GEMM_KERNELS[name], GEMM_CONFIGS[name].key
    assert set(key) <= set(kernel.arg_names), set(key) - set(kernel.arg_names)
    arguments = _captured_arguments()[kernel.fn.__name__]
    assert set(key) <= set(arguments), set(key) - set(arguments)


def test_tiles_are_fitted_to_the_gpus_shared_memory():
    """128x256x64 bf16 (144 KiB over 3 stages) fits an A100's 163 KiB, not a 64 KiB MI300 workgroup; TF32 doubles
    the bytes; when nothing fits, the smallest tile is kept."""
    configs = conv.FORWARD_CONFIGS
    big = runtime.gemm_tile(128, 256, 64, 8, 3)
    assert runtime.pipeline_shared_bytes(big, 2) == 3 * (128 + 256) * 64 * 2
    assert big in configs.fitting(configs.tensor_core, 2, 166912)
    assert big not in configs.fitting(configs.tensor_core, 4, 166912)
    hip = configs.gpu(True, "hip")
    assert all(runtime.pipeline_shared_bytes(c, 2) <= 65536 for c in configs.fitting(hip, 2, 65536))
    assert configs.fitting(configs.tensor_core, 4, 1) == (min(configs.tensor_core, key=lambda c: (
        runtime.pipeline_shared_bytes(c, 4))),)


# Shared memory one block may use (study.inspection.compilation.TARGETS): H100 / H200 (sm_90), A100 (sm_80).
SHARED_PER_BLOCK = {132: 232448, 108: 166912}
# (variant, layer): {SMs: (BLOCK_M, BLOCK_N, BLOCK_K, splits)} of the weight gradient at batch 128, bf16,
# channels_last. 128x128x32's BK 32 slices the pixels finer than BK 64 at the same modelled MMA rate (0.94
# issue/tensor); 192 output channels per group take the flat 192-row tiles (2012 conv4, torchvision conv2: no row
# padding, 1728 or 1600 columns padded to 1792 or 1664); 192 input channels per group with 384 or 128 output
# channels (torchvision conv3; 2012 conv5 on an H100) reduce flat too (1792 columns: 14 of 128, 7 of 256), where
# channel blocks' 64-wide tiles were issue-bound; 2012 conv2's flat 1200 (r, s, c) take 128 or 256 (5 or 10
# blocks, 1280); torchvision conv1's 64 output channels the 64-row flat tile (0.94 on half the rows of 128x128x32);
# 132 or 108 SMs take different splits.
WEIGHT_GRAD_PLANS = {
    ("2012", "conv1"): {132: (96, 256, 64, conv.CRS_ROWS, 66), 108: (96, 256, 64, conv.CRS_ROWS, 54)},
    ("2012", "conv2"): {132: (128, 256, 64, 13), 108: (128, 128, 64, 16)},
    ("2012", "conv3"): {132: (128, 128, 32, 7), 108: (128, 128, 64, 2)},
    ("2012", "conv4"): {132: (192, 128, 64, 9), 108: (192, 128, 32, 7)},
    ("2012", "conv5"): {132: (128, 256, 64, 9), 108: (128, 64, 64, 2)},
    ("torchvision", "conv1"): {132: (64, 256, 64, 66), 108: (64, 256, 64, 54)},
    ("torchvision", "conv2"): {132: (192, 128, 64, 10), 108: (192, 128, 32, 8)},
    ("torchvision", "conv3"): {132: (128, 128, 64, 3), 108: (128, 256, 64, 5)},
    ("torchvision", "conv4"): {132: (128, 128, 32, 7), 108: (256, 64, 64, 2)},
    ("torchvision", "conv5"): {132: (128, 128, 32, 7), 108: (256, 64, 64, 3)},
}


def captured_weight_grad(variant: str, name: str, sms: int, dtype: torch.dtype = torch.bfloat16,
                         precision: str = "ieee") -> runtime.LaunchRecord:
    """The weight-gradient launch of a full-size AlexNet layer (batch 128, ``dtype``, channels_last, meta tensors)
    as a GPU with ``sms`` SMs launches it: conv1 in its space-to-depth form, as the ops launch it."""
    layer = next(c for c in CONV_LAYERS[variant] if c.name == name)
    w_shape = (layer.out_channels, layer.in_channels // layer.groups, layer.kernel, layer.kernel)
    x = torch.empty(128, layer.in_channels, layer.size, layer.size, dtype=dtype, device="meta",
                    memory_format=torch.channels_last)
    depth = conv.conv2d_depth(x, w_shape, layer.stride, layer.padding, 1, layer.groups, dtype, precision)
    g = conv.conv2d_geometry(x.shape, w_shape, layer.stride, layer.padding, 1, layer.groups)
    dy = torch.empty(128, layer.out_channels, g.OH, g.OW, dtype=dtype, device="meta",
                     memory_format=torch.channels_last)
    # the GPU's default reduction order (``conv.gpu_weight_grad_flat``), not the interpreter's
    with runtime.capture_launches() as records, runtime.target(sms), mock.patch.object(runtime, "INTERPRETER", False):
        if depth is not None:
            x_d = torch.empty(128, depth.block ** 2 * layer.in_channels, *depth.size, dtype=dtype,
                              device="meta", memory_format=torch.channels_last)
            depth.weight_grad(dy, x_d, w_shape, torch.channels_last, dtype, precision)
        else:
            conv.conv2d_weight_grad(dy, x, w_shape, layer.stride, layer.padding, groups=layer.groups,
                                    memory_format=torch.channels_last, precision=precision)
    return next(r for r in records if r.kernel is conv._conv2d_weight_grad_kernel)


@pytest.mark.parametrize("sms", SHARED_PER_BLOCK)
@pytest.mark.parametrize("variant, name", WEIGHT_GRAD_PLANS)
def test_weight_grad_tile_and_split_are_planned_together(variant, name, sms):
    """The weight gradient's tile and split count are a rule of the shapes and the SM count (never timing): the
    least modelled time (``WeightGradWork.time``); the pick rule, meeting the split, launches the planned tile on
    H100 and A100 alike (each planned tile fits both), and the plan is the least time of every (tile, split)."""
    record = captured_weight_grad(variant, name, sms)
    with runtime.target(sms):  # the pick rule plans for the target's SMs, as the step model's capture does
        chosen, = record.choices(SHARED_PER_BLOCK[sms])
        assert record.configs.pick(record.candidates, record.args) is chosen  # every shipped tile: the same one
    assert (*conv._tile_of(chosen), record.args["splits"]) == WEIGHT_GRAD_PLANS[variant, name][sms]
    work = conv.WeightGradWork.of(record.args)
    planned = work.time(conv._tile_of(chosen), record.args["splits"], sms)
    most = min(work.pixels // conv.MIN_SLICE_PIXELS, conv.MAX_SPLITS)
    assert all(planned <= work.time(conv._tile_of(c), s, sms) for c in record.candidates for s in range(1, most + 1))


@pytest.mark.parametrize("sms", SHARED_PER_BLOCK)
@pytest.mark.parametrize("variant, name", WEIGHT_GRAD_PLANS)
def test_weight_grad_reduction_order_is_the_faster_plan(variant, name, sms):
    """A GPU's weight gradient reduces flat where channel blocks would pad (``conv.gpu_flat_reduction``: conv1's
    space-to-depth form, 2012 conv2), or where its channels are whole 16-byte vectors and the flat plan's modelled
    time is the lower (``conv.weight_grad_schedule``; a tie keeps channel blocks: 256 channels)."""
    record = captured_weight_grad(variant, name, sms)
    args, x, dy = record.args, record.args["x_ptr"], record.args["dy_ptr"]
    g = conv.ConvGeometry(**{field: args[field] for field in conv.GEOMETRY_KEY})
    with runtime.target(sms):
        times = [conv.weight_grad_schedule(dy, x, g, order, True)[0] for order in (False, True)]
    if not conv.gpu_flat_reduction(g.C_per_group, True):
        assert args["FLAT_CRS"] is (times[1] < times[0])
    expected = {("2012", "conv2"), ("2012", "conv4"), ("torchvision", "conv2"), ("torchvision", "conv3")} | (
        {("2012", "conv5")} if sms == 132 else set())
    assert args["FLAT_CRS"] is ((variant, name) in expected or name == "conv1")


@pytest.mark.parametrize("sms", SHARED_PER_BLOCK)
def test_weight_grad_split_is_planned_over_the_tiles_that_fit_some_gpu(sms):
    """The split is a launch argument, fixed before the pick rule meets this GPU's tiles: it is planned over the
    shipped tiles whose pipeline fits some GPU (``conv.SHARED_PER_BLOCK``, sm_90's, the largest target's) at the
    operand's element size. At TF32 torchvision conv1's flat 64x256x64 (240 KiB at 4 bytes) fits none: planned
    over it, the split was 66 and an H100 launched 128x64x64 at it; now the planned tile launches."""
    assert conv.SHARED_PER_BLOCK == max(target.shared_per_block for target in TARGETS.values())
    record = captured_weight_grad("torchvision", "conv1", sms, torch.float32, "tf32")
    shipped = [conv._tile_of(c) for c in record.candidates]
    fitting = tuple(conv._tile_of(c) for c in record.candidates
                    if runtime.pipeline_shared_bytes(c, 4) <= conv.SHARED_PER_BLOCK)
    assert (64, 256, 64) in shipped and (64, 256, 64) not in fitting
    tile, splits = conv.weight_grad_plan(conv.WeightGradWork.of(record.args), fitting, sms)
    assert record.args["splits"] == splits
    with runtime.target(sms):
        chosen, = record.choices(SHARED_PER_BLOCK[sms])
    assert conv._tile_of(chosen) == tile


@pytest.mark.parametrize("sms", SHARED_PER_BLOCK)
def test_2012_conv1_at_tf32_launches_the_transposed_tile_of_its_96_channels(sms):
    """At TF32 2012 conv1's weight gradient (96 output channels over its space-to-depth form's 432) launches the
    transposed 96x256x32 tile, which pads no channel (128x128x32, tensor-bound at 0.92 issue/tensor on sm_90, pads
    them by a third), on an H100/H200's and an A100's SMs."""
    record = captured_weight_grad("2012", "conv1", sms, torch.float32, "tf32")
    with runtime.target(sms):
        chosen, = record.choices(SHARED_PER_BLOCK[sms])
    assert conv._tile_of(chosen) == (96, 256, 32, conv.CRS_ROWS)


def test_weight_grad_time_counts_rounds_of_programs_padding_and_partials():
    """Hand counts: 2012 conv3 (384 x 2304 over 21632 pixels) at 128x256x64 on 132 SMs. 4 splits: 3 x 9 x 4 = 108
    programs, one round, cdiv(5408, 64) = 85 steps of 128 x 256 x 64 multiply-adds (issue/tensor 0.61: the MMAs
    bound); 5 splits: 135 programs, two rounds of 68 steps. Partials: splits x 384 x 2304 x 4 bytes, written by the
    launch (under its MMAs) and read back by sum_partials, which writes dw (2 bytes an element)."""
    dy = torch.empty(128, 384, 13, 13, dtype=torch.bfloat16, device="meta")
    x = torch.empty(128, 256, 13, 13, dtype=torch.bfloat16, device="meta")
    g = conv.conv2d_geometry(x.shape, (384, 256, 3, 3), 1, 1, 1, 1)
    work = conv.WeightGradWork.of(dict(N=128, **g.kernel_args(), dy_ptr=dy, x_ptr=x, FLAT_CRS=False,
                                       WINDOW_INSIDE=g.window_inside))
    elements = 384 * 2304
    for splits, rounds, steps in ((4, 1, 85), (5, 2, 68)):
        expected = rounds * steps * 128 * 256 * 64 + splits * elements * 4 + elements * 2
        assert work.time((128, 256, 64), splits, 132) == expected
    # 128x64x64 channel-block loops issue-bound on sm_90 (1.18 issue/tensor): its MMAs count 1.18 times; 3 x 36 x 4
    # = 432 programs of 4 splits, 4 rounds
    assert work.time((128, 64, 64), 4, 132) == pytest.approx(4 * 85 * 128 * 64 * 64 * 1.18 + 4 * elements * 4
                                                             + elements * 2)


def _weight_grad_loop(case: str) -> str:
    """The kind of weight-gradient loop (``conv.weight_grad_loop``) a channels_last inspection case launches: its
    layer's space-to-depth form or the GPU's reduction order (at the case's dtype, planned for the SMs the
    inspection captures with) and its windows (a drop-in case is a dilated conv3)."""
    variant, name, dtype_name = case.split("/")[:3]
    layer = next((c for c in CONV_LAYERS.get(variant, ()) if c.name == name), None)
    if layer is None:
        return "channel blocks"
    dtype, precision = cases.DTYPES[dtype_name]
    x_shape = (128, layer.in_channels, layer.size, layer.size)
    w_shape = (layer.out_channels, layer.in_channels // layer.groups, layer.kernel, layer.kernel)
    x = torch.empty(x_shape, dtype=dtype, device="meta").contiguous(memory_format=torch.channels_last)
    if conv.conv2d_depth(x, w_shape, layer.stride, layer.padding, 1, layer.groups, torch.bfloat16, "ieee"):
        return "flat"
    g = conv.conv2d_geometry(x_shape, w_shape, layer.stride, layer.padding, 1, layer.groups)
    dy = torch.empty(128, layer.out_channels, g.OH, g.OW, dtype=dtype, device="meta",
                     memory_format=torch.channels_last)
    with runtime.target(CAPTURED.sms):
        return conv.weight_grad_loop(conv.gpu_weight_grad_flat(dy, x, g, precision), g.window_inside)


def test_weight_grad_issue_per_tensor_table_is_the_inspections():
    """``WEIGHT_GRAD_ISSUE_PER_TENSOR`` is reports/kernels/inspection.csv's largest sm_90 channels_last
    issue/tensor of each shipped weight-gradient tile in each kind of loop at each operand size (bf16/fp16: 2
    bytes, TF32: 4), or sm_80's where that is 1 or more (so that the table, read on an A100 too, never understates
    an issue bound), rounded up to 0.01; every tensor-core tile of the loop's config set that fits sm_90 at that
    size has an entry."""
    table = pd.read_csv(Path(__file__).resolve().parents[1] / "reports" / "kernels" / "inspection.csv")
    rows = table[(table.kernel == "_conv2d_weight_grad_kernel") & (table.layouts == "channels_last")]
    loops = rows.case_list.map(lambda cases: {_weight_grad_loop(case) for case in cases.split(";")})
    assert (loops.map(len) == 1).all()  # one compilation is one kind of loop
    rows = rows.assign(loop=loops.map(min))
    assert set(conv.WEIGHT_GRAD_ISSUE_PER_TENSOR) == {2, 4}
    for size, dtypes in ((2, ["bf16", "fp16"]), (4, ["fp32-tf32"])):
        sized = rows[rows["dtypes"].isin(dtypes)]
        assert set(conv.WEIGHT_GRAD_ISSUE_PER_TENSOR[size]) == set(sized.loop)
        for loop, values in conv.WEIGHT_GRAD_ISSUE_PER_TENSOR[size].items():
            configs = (conv.WEIGHT_GRAD_CONFIGS if loop == "channel blocks" else
                       conv.WEIGHT_GRAD_FLAT_VECTOR_CONFIGS if loop != "flat" else
                       conv.WEIGHT_GRAD_WINDOW_INSIDE_CONFIGS if size == 2 else
                       conv.WEIGHT_GRAD_WINDOW_INSIDE_TF32_CONFIGS)
            fitting = [c for c in configs.tensor_core
                       if runtime.pipeline_shared_bytes(c, size) <= TARGETS["sm_90"].shared_per_block]
            assert set(values) == {conv._tile_of(c) for c in fitting}, (size, loop)
            for config in fitting:
                tile = conv._tile_of(config)
                rows_of = sized[(sized.config.map(lambda name: name.rsplit("_", 1)[0])
                                 == runtime.config_name(config).rsplit("_", 1)[0]) & (sized.loop == loop)]
                largest = rows_of[rows_of.target == "sm_90"].issue_per_tensor.max()
                on_sm80 = rows_of[rows_of.target == "sm_80"].issue_per_tensor.max()
                largest = max(largest, on_sm80) if on_sm80 >= 1 else largest
                assert values[tile] == math.ceil(round(largest * 100, 6)) / 100, (size, loop, tile, largest)



def _rows_and_cases(table: pd.DataFrame, config: triton.Config, target: str) -> tuple[pd.DataFrame, set[str]]:
    """The inspection rows of ``config`` (as launched on ``target``'s backend) on ``target``, and their cases."""
    name = runtime.config_name(runtime.for_backend(config, TARGETS[target].gpu.backend))
    rows = table[(table.config == name) & (table.target == target)]
    return rows, {case for cases in rows.case_list for case in cases.split(";")}


@pytest.mark.parametrize("kernel", ["_conv2d_forward_kernel", "_conv2d_input_grad_kernel"])
def test_wave_tiles_compiled_as_their_comment_says(kernel):
    """reports/kernels/inspection.csv has the 64x64 forward / input-gradient tiles (``conv._WAVE_TILES``) for every
    case and target that has another tile of their channel-block set (but the one an input gradient summing a bias
    gradient launches alone: ``INPUT_GRAD_RELU_BIAS_CONFIGS``), wherever they fit its shared memory; no
    spill; where a main loop is found (torchvision conv1's input gradient over 64 channels leaves none at BK 64 on
    sm_80, as 128x64x64 does) no scalar load in it, sm_90's wgmma wait depth at least 1; issue/tensor as conv.py's
    comment says: sm_90 bf16/fp16 at most 0.79 (forward) / 0.91 (input gradient) at BK 128, 1.05 / 1.22 at BK 64,
    TF32 at most 1.0; sm_80 at most 0.71 (0.701: 2012 conv1's TF32 input gradient, 2 instructions more since the
    input gradient's tile may have two parts)."""
    table = pd.read_csv(Path(__file__).resolve().parents[1] / "reports" / "kernels" / "inspection.csv")
    table = table[table.kernel == kernel]
    forward = kernel == "_conv2d_forward_kernel"
    configs = conv.FORWARD_CONFIGS if forward else conv.INPUT_GRAD_CONFIGS
    limits = {(2, 128): 0.79 if forward else 0.91, (2, 64): 1.05 if forward else 1.22, (4, 128): 1.0, (4, 64): 1.0}
    for target, spec in TARGETS.items():
        others = set().union(*(_rows_and_cases(table, config, target)[1] for config in configs.tensor_core
                               if config not in conv._WAVE_TILES + conv.INPUT_GRAD_RELU_BIAS_CONFIGS.tensor_core))
        for tile in conv._WAVE_TILES:
            size = {case: 4 if case.split("/")[2] == "fp32-tf32" else 2 for case in others}
            fits = {case for case in others if runtime.pipeline_shared_bytes(
                runtime.for_backend(tile, spec.gpu.backend), size[case]) <= spec.shared_per_block}
            rows, tile_cases = _rows_and_cases(table, tile, target)
            assert tile_cases == fits and fits, (target, conv._tile_of(tile))
            assert (rows.status == "ok").all() and (rows.spill_bytes == 0).all()
            rows = rows.dropna(subset=["loop_instructions"])
            assert (rows.loop_scalar_loads == 0).all()
            if target == "sm_90":
                assert (rows.wgmma_wait_depth >= 1).all()
                for dtypes, rows_of in rows.groupby("dtypes"):
                    limit = limits[4 if dtypes == "fp32-tf32" else 2, tile.kwargs["BLOCK_K"]]
                    assert rows_of.issue_per_tensor.max() <= limit, (dtypes, conv._tile_of(tile))
            elif target == "sm_80":
                assert rows.issue_per_tensor.max() <= 0.71


def test_target_plans_for_another_gpu_and_restores():
    here = runtime.streaming_multiprocessors()
    with runtime.target(132):
        assert runtime.streaming_multiprocessors() == 132
        with runtime.target(304):
            assert runtime.streaming_multiprocessors() == 304
        assert runtime.streaming_multiprocessors() == 132
    assert runtime.streaming_multiprocessors() == here


def test_gemm_configs_name_the_operand_that_decides_what_fits():
    """A config set with GEMM tiles must name the tensor whose element size sizes its pipeline; one without must
    not (nothing to fit)."""
    tile = runtime.gemm_tile(64, 64, 32, 4, 2)
    with pytest.raises(ValueError, match="operand=None"):
        runtime.KernelConfigs(tensor_core=(tile,), cuda_core=(tile,), interpreter=tile, key=())
    element_wise = runtime.fixed_config(BLOCK=1024, num_warps=4)
    with pytest.raises(ValueError, match="operand='x_ptr'"):
        runtime.KernelConfigs(tensor_core=element_wise.tensor_core, cuda_core=element_wise.cuda_core,
                              interpreter=element_wise.interpreter, key=(), operand="x_ptr")
    for name, configs in GEMM_CONFIGS.items():
        assert configs.operand in GEMM_KERNELS[name].arg_names, name


@pytest.mark.parametrize("order", ["operand first", "operand last"])
def test_the_named_operand_decides_whatever_the_keyword_order(order):
    """An fp32 tensor before the bf16 operand does not make the launch fit tiles at 4 bytes per element."""
    tile = runtime.gemm_tile(64, 64, 32, 4, 2)
    configs = runtime.KernelConfigs(tensor_core=(tile,), cuda_core=(tile,), interpreter=tile, key=(), operand="b_ptr")
    a, b = torch.empty(4, dtype=torch.float32), torch.empty(4, dtype=torch.bfloat16)
    tensors = dict(b_ptr=b, a_ptr=a) if order == "operand first" else dict(a_ptr=a, b_ptr=b)
    with runtime.capture_launches() as records:
        runtime.launch(object(), lambda meta: (1,), configs, **tensors)
    assert records[0].operand_bytes == 2


def test_conv_geometry_fields_are_the_gemm_kernels_constexprs():
    """ConvGeometry's fields are passed by name (``kernel_args``) and key the autotuning cache: each is a
    constexpr parameter of every conv GEMM kernel."""
    for name in ("conv_forward", "conv_input_grad", "conv_weight_grad"):
        parameters = inspect.signature(GEMM_KERNELS[name].fn).parameters.values()
        constexprs = {p.name for p in parameters if "constexpr" in str(p.annotation)}
        assert set(conv.GEOMETRY_KEY) <= constexprs, (name, set(conv.GEOMETRY_KEY) - constexprs)
        assert set(conv.GEOMETRY_KEY) <= set(GEMM_CONFIGS[name].key)
    g = conv.conv2d_geometry((2, 3, 227, 227), (96, 3, 11, 11), 4, 0, 1, 1)
    assert (g.OH, g.OW, g.K_per_group, g.window_inside) == (55, 55, 96, True)
    assert list(g.kernel_args()) == list(conv.GEOMETRY_KEY)


@pytest.mark.parametrize("kernel_pass, channels_last, flat, stride, channels, expected", [
    ("forward", False, False, 1, 64, "FORWARD_GATHER_CONFIGS"),
    ("forward", True, False, 1, 64, "FORWARD_CONFIGS"),
    ("forward", True, True, 1, 48, "FORWARD_FLAT_VECTOR_CONFIGS"),  # conv1 after space-to-depth
    ("forward", True, True, 4, 3, "FORWARD_GATHER_CONFIGS"),  # conv1's three channels, 11x11 stride 4
    ("input_grad", True, False, 1, 64, "INPUT_GRAD_CONFIGS"),
    ("input_grad", True, False, 2, 64, "INPUT_GRAD_GATHER_CONFIGS"),  # stride phases gather
    ("input_grad", True, True, 1, 48, "INPUT_GRAD_GATHER_CONFIGS"),
    ("weight_grad", True, False, 1, 64, "WEIGHT_GRAD_CONFIGS"),
    ("weight_grad", True, True, 1, 48, "WEIGHT_GRAD_WINDOW_INSIDE_CONFIGS"),  # conv1 after space-to-depth (16-bit)
    ("weight_grad", False, False, 1, 64, "WEIGHT_GRAD_GATHER_CONFIGS"),
])
def test_one_rule_chooses_each_passs_config_set(kernel_pass, channels_last, flat, stride, channels, expected):
    """At 16-bit operands; at 4-byte ones the same, but the space-to-depth weight gradient's 64-row tile in place of
    its transposed one."""
    size, taps = (227, 11) if stride == 4 else (57, 3)
    x = torch.empty(2, channels, size, size, dtype=torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    g = conv.conv2d_geometry(x.shape, (96, channels, taps, taps), stride, 0, 1, 1)
    assert conv.pass_configs(kernel_pass, x, flat, g) is getattr(conv, expected)
    wide = "WEIGHT_GRAD_WINDOW_INSIDE_TF32_CONFIGS" if expected == "WEIGHT_GRAD_WINDOW_INSIDE_CONFIGS" else expected
    assert conv.pass_configs(kernel_pass, x.float(), flat, g) is getattr(conv, wide)
    padded = conv.conv2d_geometry(x.shape, (96, channels, taps, taps), stride, 1, 1, 1)  # windows cross x's edges
    if expected == "WEIGHT_GRAD_WINDOW_INSIDE_CONFIGS":
        assert conv.pass_configs(kernel_pass, x, flat, padded) is conv.WEIGHT_GRAD_FLAT_VECTOR_CONFIGS


@pytest.mark.parametrize("channels, channels_last, flat", [
    (3, False, True), (3, True, True),  # conv1's three channels: flat in either layout
    (48, True, True),  # 2012 conv2: 48 of each 64-channel block
    (48, False, False),  # NCHW: no channel vectors to read flat
    (96, True, True), (20, True, False),  # a block and a half; runs that are not 16-byte vectors
    (64, True, False), (192, True, False), (256, True, False)])
def test_gpu_reduction_order_is_flat_where_channel_blocks_would_pad(channels, channels_last, flat):
    assert conv.gpu_flat_reduction(channels, channels_last) is flat


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
def test_conv2_launches_the_flat_reduction_on_channel_vectors_on_a_gpu(channels_last, monkeypatch):
    """2012 conv2 (48 channels a group, 5x5, padding 2) as a GPU launches it (the interpreter's flat default off):
    channels_last, the forward and weight gradient reduce flat over (r, s, c) with the channel-vector tiles although
    its windows cross the padding (bounds checked per tap), the input gradient over channel blocks of its 128
    output channels; NCHW keeps channel blocks."""
    monkeypatch.setattr(runtime, "INTERPRETER", False)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.empty(128, 96, 27, 27, dtype=torch.bfloat16, device="meta").contiguous(memory_format=layout)
    w = torch.empty(256, 48, 5, 5, dtype=torch.bfloat16, device="meta").contiguous(memory_format=layout)
    dy = torch.empty(128, 256, 27, 27, dtype=torch.bfloat16, device="meta").contiguous(memory_format=layout)
    with runtime.capture_launches() as records, runtime.target(132):
        conv.conv2d_forward(x, w, None, padding=2, groups=2)
        conv.conv2d_input_grad(dy, w, x.shape, padding=2, groups=2, memory_format=layout)
        conv.conv2d_weight_grad(dy, x, w.shape, padding=2, groups=2, memory_format=layout)
    gemms = [r for r in records if r.kernel in (conv._conv2d_forward_kernel, conv._conv2d_input_grad_kernel,
                                                conv._conv2d_weight_grad_kernel)]  # not sum_partials
    forward, input_grad, weight_grad = gemms
    assert not forward.args["WINDOW_INSIDE"] and not input_grad.args["FLAT_KRS"]
    assert forward.args["FLAT_CRS"] is weight_grad.args["FLAT_CRS"] is channels_last
    expected = ((conv.FORWARD_FLAT_VECTOR_CONFIGS, conv.INPUT_GRAD_CONFIGS, conv.WEIGHT_GRAD_FLAT_VECTOR_CONFIGS)
                if channels_last
                else (conv.FORWARD_GATHER_CONFIGS, conv.INPUT_GRAD_GATHER_CONFIGS, conv.WEIGHT_GRAD_GATHER_CONFIGS))
    assert tuple(r.configs for r in gemms) == expected


@pytest.mark.parametrize("flat", [True, False])
def test_reduction_block_count_from_python_matches_the_kernels_rule(flat):
    """``crs_blocks`` is the kernels' own ``_crs_blocks``: flat ceil(C*R*S / BLOCK), else R*S*ceil(C / BLOCK)."""
    for c, r, s, block in ((3, 11, 11, 32), (48, 3, 3, 64), (192, 3, 3, 128), (1, 1, 1, 16)):
        expected = -(-c * r * s // block) if flat else r * s * -(-c // block)
        assert conv.crs_blocks(c, r, s, block, flat) == expected


def test_host_ceil_division_is_tritons():
    """Grids and splits use ``runtime.cdiv`` (triton.cdiv is a constexpr function, microseconds per host call)."""
    for a in (0, 1, 127, 128, 129, 3025 * 128):
        for b in (1, 16, 128, 512):
            assert runtime.cdiv(a, b) == triton.cdiv(a, b)
