"""Launch configurations: the interpreter's GEMM tiles and the configs an AMD GPU launches."""

from __future__ import annotations

import pytest
from alexnet_triton.kernels import runtime

GEMM_CONFIGS = {"conv_forward": runtime.CONV_FORWARD, "conv_input_grad": runtime.CONV_INPUT_GRAD,
                "conv_weight_grad": runtime.CONV_WEIGHT_GRAD, "linear_forward": runtime.LINEAR_FORWARD,
                "linear_input_grad": runtime.LINEAR_INPUT_GRAD, "linear_weight_grad": runtime.LINEAR_WEIGHT_GRAD}


@pytest.mark.parametrize("rows, cols, reduction", [(1, 1, 1), (17, 5, 3), (4624, 12, 363), (16, 4096, 9216),
                                                    (1 << 20, 1 << 20, 1 << 20)])
def test_interpreter_tile_covers_the_problem_up_to_the_caps(rows, cols, reduction):
    tile = runtime.interpreter_gemm_tile(rows, cols, reduction).kwargs
    caps = runtime._INTERPRETER_TILE_CAPS
    for block, size, cap in ((tile["BLOCK_M"], rows, caps["rows"]), (tile["BLOCK_N"], cols, caps["cols"])):
        assert block >= 16 and block & (block - 1) == 0  # tl.dot needs powers of two >= 16
        assert block >= min(size, cap) and block <= max(16, 2 * size)
    block_k = tile["BLOCK_K"]
    assert block_k >= 16 and block_k & (block_k - 1) == 0 and block_k <= max(16, 2 * reduction)
    assert max(tile["BLOCK_M"], tile["BLOCK_N"]) * block_k <= caps["operand_elements"] or block_k == 16


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
        runtime.CONV_FORWARD.gpu(True, "xpu")
