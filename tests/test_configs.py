"""Launch configurations: the interpreter's GEMM tiles and the configs an AMD GPU launches."""

from __future__ import annotations

import pytest
import torch

from alexnet_triton.kernels import conv, linear, runtime

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


@pytest.mark.parametrize("k, c, expected", [(128, 48, (128, 64)), (384, 256, (128, 256)), (192, 192, (256, 64)),
                                             (256, 384, (256, 128))])
def test_weight_grad_tile_is_picked_by_least_work(k, c, expected):
    """The weight gradient's tile is a rule of the shapes (never timing): conv2's 48 channels per group take
    64-wide channel blocks, conv3's 384 output channels 128-row tiles, 192 x 192 (conv4) 256x64, 256 x 384 the
    largest tile."""
    configs = conv.WEIGHT_GRAD_CONFIGS
    args = dict(K_per_group=k, C_per_group=c, R=3, S=3, FLAT_CRS=False)
    chosen = configs.pick(configs.tensor_core, args).kwargs
    assert (chosen["BLOCK_M"], chosen["BLOCK_N"]) == expected


def test_target_plans_for_another_gpu_and_restores():
    here = runtime.streaming_multiprocessors()
    with runtime.target(132):
        assert runtime.streaming_multiprocessors() == 132
        with runtime.target(304):
            assert runtime.streaming_multiprocessors() == 304
        assert runtime.streaming_multiprocessors() == 132
    assert runtime.streaming_multiprocessors() == here
