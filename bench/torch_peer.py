"""PyTorch peer of the LoRA training benchmark.

The same step as the tfjs engine, in plain PyTorch (no transformers library): GPT-2 or Llama
blocks with random float32 weights, LoRA (PEFT semantics: y = x W^T + dropout(x) A^T B^T * alpha/r)
on the attention projections, eager attention with an additive causal mask, the loss over the
shifted labels through the tied embedding, clip_grad_norm_(1.0) and torch.optim.AdamW on the LoRA
parameters only. With "checkpointing": true in the spec, each block runs under
torch.utils.checkpoint, as the engine does when its step needs gradient checkpointing to fit.

Usage: python3 torch_peer.py '<json spec>'; prints one JSON line with tokens_per_s, step_ms,
forward_ms, backward_ms and optimizer_ms (medians over `steps` steps after one warm-up step).
"""
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class LoraLinear(nn.Module):
    """A frozen linear layer with an optional trainable low-rank update."""

    def __init__(self, in_features, out_features, bias, rank, dropout):
        super().__init__()
        self.base = nn.Linear(in_features, out_features, bias=bias)
        self.base.weight.requires_grad_(False)
        if bias:
            self.base.bias.requires_grad_(False)
        self.rank = rank
        if rank:
            self.lora_A = nn.Parameter(torch.empty(rank, in_features).uniform_(-1 / math.sqrt(in_features), 1 / math.sqrt(in_features)))
            self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
            self.scaling = 2 * rank / rank  # lora_alpha = 2r, as in the tfjs scenario
            self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        y = self.base(x)
        if self.rank:
            y = y + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling
        return y


def causal_attention(q, k, v, mask):
    """q [b, h, s, d], k/v [b, h, s, d]; eager attention as transformers' eager path."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask
    return torch.softmax(scores, dim=-1) @ v


class Gpt2Block(nn.Module):
    def __init__(self, spec, rank, dropout):
        super().__init__()
        h = spec["hidden"]
        self.heads = spec["heads"]
        self.ln_1 = nn.LayerNorm(h, eps=1e-5)
        self.ln_2 = nn.LayerNorm(h, eps=1e-5)
        self.c_attn = LoraLinear(h, 3 * h, True, rank, dropout)
        self.c_proj = LoraLinear(h, h, True, rank, dropout)
        self.c_fc = LoraLinear(h, spec["intermediate"], True, 0, 0)
        self.mlp_proj = LoraLinear(spec["intermediate"], h, True, 0, 0)

    def forward(self, x, mask, rope):
        b, s, h = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(h, dim=2)
        heads = lambda t: t.view(b, s, self.heads, h // self.heads).transpose(1, 2)
        attended = causal_attention(heads(q), heads(k), heads(v), mask).transpose(1, 2).reshape(b, s, h)
        x = x + self.c_proj(attended)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class RmsNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size), requires_grad=False)
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaBlock(nn.Module):
    def __init__(self, spec, rank, dropout):
        super().__init__()
        h = spec["hidden"]
        self.heads = spec["heads"]
        self.kv_heads = spec["kvHeads"]
        self.head_dim = h // self.heads
        self.input_layernorm = RmsNorm(h, 1e-5)
        self.post_attention_layernorm = RmsNorm(h, 1e-5)
        self.q_proj = LoraLinear(h, self.heads * self.head_dim, False, rank, dropout)
        self.k_proj = LoraLinear(h, self.kv_heads * self.head_dim, False, rank, dropout)
        self.v_proj = LoraLinear(h, self.kv_heads * self.head_dim, False, rank, dropout)
        self.o_proj = LoraLinear(self.heads * self.head_dim, h, False, rank, dropout)
        self.gate_proj = LoraLinear(h, spec["intermediate"], False, 0, 0)
        self.up_proj = LoraLinear(h, spec["intermediate"], False, 0, 0)
        self.down_proj = LoraLinear(spec["intermediate"], h, False, 0, 0)

    def forward(self, x, mask, rope):
        b, s, h = x.shape
        cos, sin = rope
        y = self.input_layernorm(x)
        q = self.q_proj(y).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(y).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(y).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = self.heads // self.kv_heads
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        attended = causal_attention(q, k, v, mask).transpose(1, 2).reshape(b, s, h)
        x = x + self.o_proj(attended)
        y = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y))


class CausalLM(nn.Module):
    def __init__(self, spec, rank, dropout):
        super().__init__()
        self.spec = spec
        h = spec["hidden"]
        self.embed = nn.Parameter(torch.empty(spec["vocab"], h).uniform_(-0.04, 0.04), requires_grad=False)
        gpt2 = spec["family"] == "gpt2"
        if gpt2:
            self.positions = nn.Parameter(torch.empty(spec["positions"], h).uniform_(-0.04, 0.04), requires_grad=False)
            self.final_norm = nn.LayerNorm(h, eps=1e-5)
        else:
            self.final_norm = RmsNorm(h, 1e-5)
        block = Gpt2Block if gpt2 else LlamaBlock
        self.blocks = nn.ModuleList(block(spec, rank, dropout) for _ in range(spec["layers"]))
        for name, parameter in self.named_parameters():
            if "lora_" in name:
                continue
            parameter.requires_grad_(False)
            if parameter.dim() == 2:
                parameter.data.uniform_(-0.04, 0.04)

    def rope(self, seq):
        head_dim = self.spec["hidden"] // self.spec["heads"]
        inv = 1.0 / (self.spec["ropeTheta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(seq, dtype=torch.float32), inv)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()

    def loss(self, input_ids, mask, rope):
        b, s = input_ids.shape
        x = self.embed[input_ids]
        if self.spec["family"] == "gpt2":
            x = x + self.positions[:s]
        for block in self.blocks:
            if self.spec.get("checkpointing"):
                x = checkpoint(block, x, mask, rope, use_reentrant=False)
            else:
                x = block(x, mask, rope)
        hidden = self.final_norm(x)[:, :-1].reshape(-1, x.shape[-1])
        logits = hidden @ self.embed.t()
        return F.cross_entropy(logits, input_ids[:, 1:].reshape(-1))


def main():
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    b, s = spec["batch"], spec["seq"]
    model = CausalLM(spec, spec["rank"], spec["lora_dropout"])
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=2e-4, weight_decay=0.0)
    input_ids = torch.randint(0, spec["vocab"], (b, s))
    mask = torch.full((s, s), -1e9).triu(1)
    rope = model.rope(s) if spec["family"] != "gpt2" else None

    steps, forward, gradients, updates = [], [], [], []
    for i in range(spec["steps"] + 1):
        start = time.perf_counter()
        loss = model.loss(input_ids, mask, rope)
        loss.backward()
        loss.item()
        after_backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        if i == 0:
            continue
        steps.append(end - start)
        gradients.append(after_backward - start)
        updates.append(end - after_backward)
        with torch.no_grad():
            start = time.perf_counter()
            model.loss(input_ids, mask, rope).item()
            forward.append(time.perf_counter() - start)

    step = statistics.median(steps)
    forward_s = statistics.median(forward)
    print(json.dumps({
        "tokens_per_s": b * s / step,
        "step_ms": 1000 * step,
        "forward_ms": 1000 * forward_s,
        "backward_ms": 1000 * max(0.0, statistics.median(gradients) - forward_s),
        "optimizer_ms": 1000 * statistics.median(updates),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
