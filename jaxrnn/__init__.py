"""jaxrnn: character-level RNN / LSTM / GRU language models in JAX with a hand-written BPTT.

Public entry points::

    params = jaxrnn.init_params(key, "lstm", vocab_size, hidden_size, num_layers=1)
    state = jaxrnn.init_state("lstm", batch_size, hidden_size, num_layers=1)
    (loss, final_state), grads = jax.value_and_grad(jaxrnn.loss_fn, has_aux=True)(
        params, inputs, targets, state, arch="lstm", backward="manual")
"""
from jaxrnn.cells import ARCHS, ACTIVATIONS, RECURRENT_INITS, get_cell, gru_step, lstm_step, rnn_step
from jaxrnn.errors import CheckpointError, ConfigError, DataError, JaxrnnError, TrainingDivergedError
from jaxrnn.model import forward_log_probs, init_params, init_state, loss_fn, model_step
from jaxrnn.types import LSTMState
from jaxrnn.unroll import unroll

__version__ = "0.1.0"
