"""Character- or byte-level GPT on real text (nanoGPT layout: pre-LN blocks, tied wte/head).

Module names follow nanoGPT (``transformer.wte``, ``transformer.h[i].attn.c_attn`` ...) so
sparsity methods can address layers the way their reference code does. Each attention
module has ``pattern_mask``: None, or a bool (T, T) "may attend" mask that a sparse
attention method sets; it is combined with causality.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from raytrain_eff.data.corpus import BUILTIN_CORPORA, CharVocab, load_text
from raytrain_eff.data.text import ByteVocab, InMemoryText, StreamedText, streamed_text
from raytrain_eff.tasks.base import Task
from raytrain_eff.typed import ConfigError


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.pattern_mask: torch.Tensor | None = None
        # (q, k, v, mask) -> y: a kernel that exploits pattern_mask (set by a sparse method)
        self.attention_fn = None
        self._allowed: tuple = (None, None)  # (pattern_mask it came from, causal & pattern)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (
            t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v)
        )  # (B, nh, T, hs)
        drop = self.dropout if self.training else 0.0
        if self.pattern_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        else:
            mask = self._allowed_mask(self.pattern_mask, T, x.device)
            if self.attention_fn is not None:
                y = self.attention_fn(q, k, v, mask)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)

    def _allowed_mask(self, pattern: torch.Tensor, T: int, device) -> torch.Tensor:
        """causal & pattern, rebuilt only when the pattern, length or device changes."""
        source, mask = self._allowed
        if source is not pattern or mask.shape[0] != T or mask.device != device:
            causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
            mask = causal & pattern[:T, :T].to(device)
            self._allowed = (pattern, mask)
        return mask


class MLP(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.mlp = MLP(n_embd)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.ln_1(x)))
        return x + self.drop(self.mlp(self.ln_2(x)))


class Trunk(nn.Module):
    """nanoGPT's ``transformer`` ModuleDict as a module with typed attributes (same state-dict
    keys: ``transformer.wte.weight``, ``transformer.h.0.attn.c_attn.weight``, ...)."""

    def __init__(
        self, vocab_size: int, seq_len: int, n_layer: int, n_head: int, n_embd: int, dropout: float
    ):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(seq_len, n_embd)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)


class GPT(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.seq_len = seq_len
        self.transformer = Trunk(vocab_size, seq_len, n_layer, n_head, n_embd, dropout)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying
        self.n_layer = n_layer
        for name, module in self.named_modules():
            self.init_weights(name, module)

    def init_weights(self, name: str, module: nn.Module) -> None:
        """GPT-2's init of one module (``name`` as in ``named_modules``): normal(0, 0.02)
        weights, zero biases, and residual projections (``c_proj``) at std 0.02/√(2·n_layer).
        Per module, so the meta-device materialiser (engine.materialize) can apply it too."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            residual = name.endswith("c_proj")
            std = 0.02 / math.sqrt(2 * self.n_layer) if residual else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        for _ in range(new_tokens):
            logits = self(idx[:, -self.seq_len :])[:, -1, :] / max(temperature, 1e-6)
            nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx


class LanguageModelTask(Task):
    """Next-token prediction (characters or UTF-8 bytes, ``task.vocab``) on ``data.dataset``,
    scored on ``data.val_dataset`` or the held-out last ``val_fraction`` of it. Parquet text
    with the byte vocabulary is streamed (``data.text``): memory stays a few row groups."""

    builtin_datasets = BUILTIN_CORPORA
    streams_parquet = True
    offers_test_split = True  # in-memory corpora only (load refuses a streamed one)

    @classmethod
    def required_columns(cls, data):
        return {data.text_column: "string"}

    def load(self) -> None:
        d, p = self.data, self.params
        kind = (
            p.vocab if p.vocab != "auto" else ("char" if d.dataset in BUILTIN_CORPORA else "bytes")
        )
        self.text: InMemoryText | StreamedText
        if kind == "bytes" and d.dataset not in BUILTIN_CORPORA:
            if d.test_fraction:
                raise ConfigError(
                    f"data.test_fraction: {d.test_fraction}: streamed text ({d.dataset}) "
                    f"holds out no test split; set it to 0"
                )
            self.text = streamed_text(d, p.seq_len, self.seed)
        else:
            if d.val_dataset is not None:
                raise ConfigError(
                    f"data.val_dataset: {d.val_dataset}: set for an in-memory "
                    f"corpus ({d.dataset}, task.vocab={kind}); it needs a Parquet "
                    f"data.dataset streamed with task.vocab=bytes (or auto)"
                )
            corpus = load_text(d.dataset, d.text_column)
            vocab = CharVocab(corpus) if kind == "char" else ByteVocab()
            self.text = InMemoryText(
                corpus,
                vocab,
                val_fraction=d.val_fraction,
                seq_len=p.seq_len,
                seed=self.seed,
                name=d.dataset,
                test_fraction=d.test_fraction,
            )
        self.vocab = self.text.vocab
        self.num_train = self.text.num_train

    def build_model(self) -> nn.Module:
        p = self.params
        return GPT(len(self.vocab), p.seq_len, p.n_layer, p.n_head, p.n_embd, p.dropout)

    def shard_units(self, model):
        """Each block's attention and its MLP, one unit each (a third and two thirds of the
        block's weights), so a forward or backward gathers part of a block, never all of it.
        The root keeps the rest: the tied embedding/head (a tied weight must live in one
        unit), positions, the final norm and the blocks' norms (4·n_embd floats a block)."""
        # FSDP2 warns that these units return views (a biased Linear's 3-D output is one): an
        # in-place op on the output would skip the backward all-gather. Block adds them out
        # of place, so the warning has no action for us.
        warnings.filterwarnings(
            "ignore",
            message=r"FSDP2-wrapped module \((FSDPCausalSelfAttention|FSDPMLP)\) returned a view",
            category=UserWarning,
        )
        return [unit for block in model.transformer.h for unit in (block.attn, block.mlp)]

    def loss(self, model, batch):
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))

    def batch_at(self, position, rank, world, batch_size):
        return self.text.batch(position, rank, world, batch_size)

    def val_batches(self, batch_size, num_batches):
        return self.text.val_batches(batch_size, num_batches)

    def test_batches(self, batch_size, num_batches):
        if not isinstance(self.text, InMemoryText) or not len(self.text.test_ids):
            return super().test_batches(batch_size, num_batches)
        return self.text.val_batches(batch_size, num_batches, split="test")

    def counts(self, batch):
        return batch[0].shape[0], batch[0].numel()

    def extra_flops(self, batch):
        """QKᵀ and AV: 2·(2·B·T²·C) forward FLOPs per layer (causal half is not skipped)."""
        B, T = batch[0].shape
        return self.params.n_layer * 4.0 * B * T * T * self.params.n_embd

    def checksum(self) -> str:
        return self.text.checksum()

    def sample(self, model, prompt: str, new_tokens: int, temperature: float, seed: int) -> str:
        idx = torch.from_numpy(self.vocab.encode(prompt).astype("int64"))[None]
        gen = torch.Generator().manual_seed(seed)
        out = model.generate(idx, new_tokens, temperature, gen)
        return self.vocab.decode(out[0].tolist())
