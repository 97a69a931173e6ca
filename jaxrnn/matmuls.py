"""The two matrix products every layer uses, with the optional bfloat16 operands.

``matmul_dtype`` is None (multiply in the operands' dtype) or ``"bfloat16"``: both operands of
the product are rounded to bfloat16 and accumulated in the first operand's own dtype (float32),
the tensor-core mode of GPUs and TPUs. Every product of the model goes through these two
functions, in the forward and in the hand-written backward, so one choice covers them all.
"""
import jax.numpy as jnp

MATMUL_DTYPES = (None, "bfloat16")


def matmul(a, b, matmul_dtype=None):
    """``a @ b`` for a: (..., K), b: (K, N) -> (..., N); with ``matmul_dtype="bfloat16"`` the
    product of the operands rounded to bfloat16, accumulated in ``a``'s dtype
    (``preferred_element_type``): bfloat16 matmuls with float32 accumulation. Everything outside
    the matrix products stays in ``a``'s dtype."""
    if matmul_dtype is None:
        return a @ b
    return jnp.matmul(a.astype(matmul_dtype), b.astype(matmul_dtype),
                      preferred_element_type=a.dtype)


def sum_outer(a, b, matmul_dtype=None):
    """sum_t a_t^T b_t for a: (T, B, X), b: (T, B, Y) -> (X, Y): one GEMM over all T*B rows
    (operands rounded to ``matmul_dtype`` as in `matmul`)."""
    if matmul_dtype is None:
        return jnp.tensordot(a, b, axes=((0, 1), (0, 1)))
    return jnp.tensordot(a.astype(matmul_dtype), b.astype(matmul_dtype), axes=((0, 1), (0, 1)),
                         preferred_element_type=a.dtype)
