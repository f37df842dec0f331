"""A packed training forward for BERT-family reward models: the same rewards, fewer FLOPs.

A reward is read from one position (the pooled first token), and padding carries no information, so
two kinds of work in the stock forward are wasted:

* padding rows in every linear layer: here the linears run on the real tokens only, packed to
  (N, d); only attention, which needs the (rows, length) layout, sees padding;
* the last layer for every token except the first: its keys and values need all tokens, but its
  query, attention output and feed-forward are computed for the first token only;
* on a CPU, attention over padding: each row attends over its own real tokens, one row at a time
  (`_RowAttention`), so scores are (H, L, L) for that row's length L — no mask, no padded grid, and
  small enough to stay in cache; a compiled kernel (`rewardlab.models.kernels`) gives each thread whole
  rows. Elsewhere (GPUs) attention runs batched over the padded grid, where SDPA kernels are fast.

The wrapper calls the model's own modules (same parameters, same `state_dict` under `.model`), so a
checkpoint is still the plain `AutoModelForSequenceClassification`; outputs equal the stock forward's
to float rounding (tests check logits and gradients). Architectures it does not know fall back to the
stock forward: `packed_reward_model(model)` returns None for them.

>>> from rewardlab.models.backbones import load_backbone
>>> from rewardlab.models.batching import encode_texts, pad_rows
>>> from rewardlab.training.runtime import disable_dropout
>>> model, tok = load_backbone("minilm", max_length=64, seed=0)
>>> disable_dropout(model)  # as training does by default: the wrapper applies dropout as in training
>>> enc = encode_texts(tok, ["Human: hi", "Human: tell me a story"], ["Hello!", "Sure."], max_length=64)
>>> batch = pad_rows(enc.input_ids, enc.token_type_ids, pad_id=tok.pad_token_id)
>>> fast = packed_reward_model(model)
>>> torch.allclose(fast(**batch).logits, model(**batch).logits, atol=1e-6)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rewardlab.models.kernels import compiled_kernels

__all__ = ["PackedBertReward", "packed_reward_model"]


@dataclass
class _Layout:
    """Where the real tokens of a right-padded (R, T) batch sit."""

    rows: int
    width: int
    index: torch.Tensor  # (N,) flat positions of real tokens in the (R*T) grid
    first: torch.Tensor  # (R,) position of each row's first token in the packed (N,) order
    key_mask: torch.Tensor | None  # (R, 1, 1, T) True = attend; None when nothing is padded
    lengths: list[int]  # (R,) real tokens per row: row r is packed rows [first[r], first[r] + L)


@dataclass
class RewardOutput:
    logits: torch.Tensor  # (R, 1), like SequenceClassifierOutput.logits


def _layout(attention_mask: torch.Tensor) -> _Layout:
    rows, width = attention_mask.shape
    real = attention_mask.bool()  # (R, T)
    index = real.flatten().nonzero().squeeze(1)  # (N,)
    counts = real.sum(1)  # (R,)
    first = torch.cumsum(counts, 0) - counts  # (R,) rows start at position 0 (right padding)
    key_mask = None if bool(real.all()) else real[:, None, None, :]
    return _Layout(rows, width, index, first, key_mask, counts.tolist())


def _to_heads(packed: torch.Tensor, lay: _Layout, *, parts: int, heads: int) -> torch.Tensor:
    """(N, parts·d) packed → (parts, R, H, T, dh) padded, for attention."""
    grid = packed.new_zeros(lay.rows * lay.width, packed.shape[1])
    grid = grid.index_copy(0, lay.index, packed)  # (R*T, parts·d)
    return grid.view(lay.rows, lay.width, parts, heads, -1).permute(2, 0, 3, 1, 4)


def _fused_linear(linears: list[nn.Linear], x: torch.Tensor) -> torch.Tensor:
    """Several linears of one input as ONE matmul: one (N, d)·(d, k·d) GEMM beats k small ones."""
    weight = torch.cat([lin.weight for lin in linears])  # (k·d, d)
    bias = torch.cat([lin.bias for lin in linears])  # (k·d,)
    return F.linear(x, weight, bias)


def _rows_forward(qkv: torch.Tensor, lengths: list[int], heads: int, scale: float
                  ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The rows one after another: (N, 3d) → (N, d) and the backward's q, k, v of every row (not
    the (H, L, L) probabilities: `_rows_backward` computes them again, one row at a time)."""
    out = qkv.new_empty(qkv.shape[0], qkv.shape[1] // 3)  # (N, d)
    saved: list[torch.Tensor] = []
    for x, o in zip(qkv.split(lengths), out.split(lengths)):
        length = x.shape[0]
        # (3, H, L, dh) in one contiguous copy, so every bmm below reads contiguous memory;
        # clone, not contiguous(): for L = 1 that is a view, and q.mul_ would write into qkv
        q, k, v = x.view(length, 3, heads, -1).permute(1, 2, 0, 3).clone(
            memory_format=torch.contiguous_format)
        q.mul_(scale)  # on (H, L, dh) instead of the (H, L, L) scores
        p = torch.softmax(torch.bmm(q, k.transpose(1, 2)), -1)  # (H, L, L)
        o_heads = torch.bmm(p, v)  # (H, L, dh)
        o.view(length, heads, -1).copy_(o_heads.transpose(0, 1))
        saved += [q, k, v]
    return out, saved


def _rows_backward(grad_out: torch.Tensor, saved: list[torch.Tensor], lengths: list[int],
                   heads: int, scale: float) -> torch.Tensor:
    """(N, d) gradient of the output → (N, 3d) gradient of qkv, row by row."""
    grad_qkv = grad_out.new_empty(grad_out.shape[0], 3 * grad_out.shape[1])  # (N, 3d)
    for r, (do, g) in enumerate(zip(grad_out.split(lengths), grad_qkv.split(lengths))):
        q, k, v = saved[3 * r:3 * r + 3]
        # the forward's p again, by its own ops (bit-identical): one row's (H, L, L) alive at a
        # time instead of every row of every layer from forward to backward
        p = torch.softmax(torch.bmm(q, k.transpose(1, 2)), -1)
        length = do.shape[0]
        do = do.view(length, heads, -1).transpose(0, 1).contiguous()  # (H, L, dh)
        dv = torch.bmm(p.transpose(1, 2), do)
        dp = torch.bmm(do, v.transpose(1, 2))  # (H, L, L)
        ds = torch._softmax_backward_data(dp, p, -1, p.dtype)  # P ∘ (dP − rowsum(dP ∘ P))
        dq = torch.bmm(ds, k).mul_(scale)
        dk = torch.bmm(ds.transpose(1, 2), q)  # q already carries the scale
        g.view(length, 3, heads, -1).copy_(torch.stack((dq, dk, dv)).permute(2, 0, 1, 3))
    return grad_qkv


class _RowAttention(torch.autograd.Function):
    """softmax(q kᵀ · scale) v of every row over its own tokens: (N, 3d) packed qkv → (N, d).

    One row at a time, heads batched: the (H, L, L) scores of a row stay in cache and need no mask.
    Runs in the dtype of `qkv` (bf16 under autocast, like the stock eager path's matmuls). The
    backward takes dS = P ∘ (dP − rowsum(dP ∘ P)) from ATen's fused softmax backward: one kernel
    instead of a subtract and a multiply over the (H, L, L) scores (measured ~6% of attention on a
    2-core CPU), and the head outputs need not be kept for it. On a CPU the compiled kernel
    (`rewardlab.models.kernels`) runs the same per-row ops with whole rows per thread,
    bit-identical to the Python loop here and ~18% faster; the loop is the fallback where the
    kernel cannot be built.
    """

    @staticmethod
    def forward(ctx: Any, qkv: torch.Tensor, lengths: list[int], heads: int,
                scale: float) -> torch.Tensor:
        kernels = compiled_kernels() if qkv.device.type == "cpu" else None
        with torch.autocast(qkv.device.type, enabled=False):  # keep softmax in qkv's dtype
            out: torch.Tensor
            if kernels is not None:
                out, *saved = kernels.row_attention_forward(qkv, lengths, heads, scale)
            else:
                out, saved = _rows_forward(qkv, lengths, heads, scale)
        ctx.save_for_backward(*saved)
        ctx.lengths, ctx.heads, ctx.scale, ctx.kernels = lengths, heads, scale, kernels
        return out

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = list(ctx.saved_tensors)
        grad_out = grads[0].to(saved[0].dtype)  # (N, d)
        if ctx.kernels is not None:
            grad_qkv = ctx.kernels.row_attention_backward(grad_out, saved, ctx.lengths, ctx.heads,
                                                          ctx.scale)
        else:
            grad_qkv = _rows_backward(grad_out, saved, ctx.lengths, ctx.heads, ctx.scale)
        return grad_qkv, None, None, None


class PackedBertReward(nn.Module):
    """`BertForSequenceClassification` with `num_labels=1`, run packed (see module doc)."""

    def __init__(self, model: Any, *, row_attention: bool = True,
                 sparse_embedding_grad: bool = False) -> None:
        super().__init__()
        self.model = model
        self.row_attention = row_attention  # False: the padded-grid attention everywhere (tests)
        self.sparse_embedding_grad = sparse_embedding_grad
        self._word_grad: torch.Tensor | None = None  # the dense gradient buffer, reused every step
        self._fed: list[torch.Tensor] = []  # token ids looked up since the last gradient arrived
        self._written: list[torch.Tensor] = []  # rows of the buffer that may be nonzero
        self._hook: Any = None
        if sparse_embedding_grad:
            self._hook = self._word_weight.register_post_accumulate_grad_hook(
                self._densify_word_grad)

    @property
    def _word_weight(self) -> nn.Parameter:
        """(vocab, d) word embeddings (a property: as an attribute nn.Module would register it twice)."""
        weight: nn.Parameter = self.model.bert.embeddings.word_embeddings.weight
        return weight

    def unwrap(self) -> Any:
        """The wrapped model, back to stock: the hook removed, the gradient buffer freed.

        Without this the hook would keep this wrapper and its gradient buffer alive as long as
        the model lives, and keep making the embedding gradient sparse.
        """
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._word_grad = None
        self._fed, self._written = [], []
        return self.model

    def _densify_word_grad(self, weight: torch.Tensor) -> None:
        """Sparse → dense word-embedding gradient in one reused (vocab, d) buffer.

        The stock backward allocates and zeroes a fresh (vocab, d) gradient every step (47 MB for
        MiniLM, ~4% of a CPU step, mostly page faults); the batch touches a few thousand rows. So
        the buffer is kept, and before a step's gradient goes in only the rows the last steps
        wrote are zeroed again (a full zero_ costs ~9 ms a step). AdamW and clipping see the same
        dense gradient as before. Later micro-batches of an accumulated step add their sparse
        gradient into this dense one in autograd's accumulation, so here they only note their rows.
        """
        grad = weight.grad
        fed, self._fed = self._fed, []
        all_rows = len(weight)
        if grad is None or not grad.is_sparse:  # a later micro-batch, accumulated by autograd
            self._written += fed  # its rows are among the ids its forward looked up
            if self._n_written() >= all_rows:
                self._written = [torch.arange(all_rows)]  # bounded: "all rows"
            return
        if self._word_grad is None:
            self._word_grad = torch.zeros_like(weight)
        elif self._n_written() >= all_rows:  # cheaper to clear it all
            self._word_grad.zero_()
        elif self._written:
            self._word_grad.index_fill_(0, torch.cat(self._written), 0.0)
        rows = grad._indices()[0]
        self._written = [rows]
        weight.grad = self._word_grad.index_add_(0, rows, grad._values())

    def _n_written(self) -> int:
        return sum(len(rows) for rows in self._written)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> RewardOutput:
        lay = _layout(attention_mask)
        x = self._embed(input_ids, token_type_ids, lay)  # (N, d)
        layers = self.model.bert.encoder.layer
        for layer in layers[:-1]:
            x = self._layer(layer, x, lay)
        cls = self._last_layer(layers[-1], x, lay)  # (R, d)
        pooler = self.model.bert.pooler
        pooled = pooler.activation(pooler.dense(cls))
        return RewardOutput(self.model.classifier(self.model.dropout(pooled)))

    def _embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
               lay: _Layout) -> torch.Tensor:
        emb = self.model.bert.embeddings
        ids = input_ids.flatten()[lay.index]  # (N,)
        # absolute positions 0..T-1 of the padded grid, as the stock forward uses
        positions = lay.index % lay.width  # (N,)
        types = (token_type_ids.flatten()[lay.index] if token_type_ids is not None
                 else torch.zeros_like(ids))
        padding_idx = emb.word_embeddings.padding_idx
        sparse = self.sparse_embedding_grad and self.training
        if sparse:
            self._fed.append(ids)  # the rows this forward's gradient will touch
        x = F.embedding(ids, self._word_weight, padding_idx, sparse=sparse)
        x = x + emb.token_type_embeddings(types)
        x = x + emb.position_embeddings(positions)
        embedded: torch.Tensor = emb.dropout(emb.LayerNorm(x))  # (N, d)
        return embedded

    def _attend(self, layer: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                lay: _Layout) -> torch.Tensor:
        """(R, H, Tq, dh) queries over (R, H, T, dh) keys/values → (R, H, Tq, dh)."""
        attn = layer.attention.self
        p = attn.dropout.p if self.training else 0.0
        if self.model.config._attn_implementation != "eager":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=lay.key_mask,
                                                  scale=attn.scaling, dropout_p=p)
        # eager = plain matmuls, which `runtime.prepare_for_training` picks where they are faster
        scores = torch.matmul(q, k.transpose(-1, -2)) * attn.scaling  # (R, H, Tq, T)
        if lay.key_mask is not None:
            scores = scores.masked_fill(~lay.key_mask, torch.finfo(scores.dtype).min)
        weights = F.dropout(scores.softmax(-1), p=p, training=self.training)
        return torch.matmul(weights, v)

    def _feed_forward(self, layer: Any, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Attention output projection, then the MLP, each with residual + LayerNorm (post-LN)."""
        out = layer.attention.output
        h = out.LayerNorm(out.dropout(out.dense(context)) + x)
        mlp = layer.output
        y: torch.Tensor = mlp.LayerNorm(mlp.dropout(mlp.dense(layer.intermediate(h))) + h)
        return y

    def _layer(self, layer: Any, x: torch.Tensor, lay: _Layout) -> torch.Tensor:
        attn = layer.attention.self
        qkv = _fused_linear([attn.query, attn.key, attn.value], x)  # (N, 3d)
        if self.row_attention and x.device.type == "cpu" and not (self.training and attn.dropout.p):
            # measured on a 2-core CPU, MiniLM, bf16: 1.5x faster attention than the padded grid
            # torch's stubs leave Function.apply untyped
            context = _RowAttention.apply(  # type: ignore[no-untyped-call]
                qkv, lay.lengths, attn.num_attention_heads, attn.scaling)
            return self._feed_forward(layer, context, x)
        q, k, v = _to_heads(qkv, lay, parts=3, heads=attn.num_attention_heads)  # (R, H, T, dh)
        context = self._attend(layer, q, k, v, lay)  # (R, H, T, dh)
        context = context.transpose(1, 2).reshape(lay.rows * lay.width, -1)[lay.index]  # (N, d)
        return self._feed_forward(layer, context, x)

    def _last_layer(self, layer: Any, x: torch.Tensor, lay: _Layout) -> torch.Tensor:
        """Only the first token's output is read, so only its query and MLP are computed."""
        attn = layer.attention.self
        heads = attn.num_attention_heads
        kv = _fused_linear([attn.key, attn.value], x)  # (N, 2d)
        k, v = _to_heads(kv, lay, parts=2, heads=heads)  # each (R, H, T, dh)
        x_cls = x[lay.first]  # (R, d)
        q = attn.query(x_cls).view(lay.rows, heads, 1, -1)  # (R, H, 1, dh)
        context = self._attend(layer, q, k, v, lay).reshape(lay.rows, -1)  # (R, d)
        return self._feed_forward(layer, context, x_cls)


def _is_plain_bert(model: Any) -> bool:
    from transformers import BertForSequenceClassification

    config = model.config
    return (type(model) is BertForSequenceClassification and config.num_labels == 1
            and not config.is_decoder and not config.add_cross_attention
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and getattr(config, "chunk_size_feed_forward", 0) == 0
            and model.bert.pooler is not None)


def packed_reward_model(model: Any, *, padding_side: str = "right",
                        sparse_embedding_grad: bool = False) -> PackedBertReward | None:
    """The packed wrapper for `model`, or None when the stock forward must run.

    Right padding only: the pooled token must sit at grid position 0 of every row.
    `sparse_embedding_grad` is for one CPU process (DDP's all-reduce wants dense gradients).
    """
    if padding_side != "right" or not _is_plain_bert(model):
        return None
    return PackedBertReward(model, sparse_embedding_grad=sparse_embedding_grad)
