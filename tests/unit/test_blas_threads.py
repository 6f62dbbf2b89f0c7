"""quarry's processes run numpy's BLAS on the calling thread (quarry.runtime)."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from quarry.runtime import blas_on_calling_thread


def blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_numpys_blas_is_left_one_thread() -> None:
    with threadpool_limits(limits=2, user_api="blas"):  # as a process on two cores starts
        assert blas_threads()
        assert set(blas_threads()) == {2}
        blas_on_calling_thread()
        assert set(blas_threads()) == {1}
        # A product past OpenBLAS' threshold for threads still gives numpy's answer.
        rng = np.random.default_rng(3)
        left, right = rng.normal(size=(64, 64)), rng.normal(size=(64, 4000))
        assert np.allclose(left @ right, np.einsum("ij,jk->ik", left, right))
