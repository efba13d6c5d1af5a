/**
 * LoRA adapters as GGUF files for llama.cpp (`llama-cli --lora FILE`, Ollama `ADAPTER FILE`).
 *
 * Layout (GGUF version 3, little-endian): magic `GGUF`, version, tensor count, metadata count,
 * metadata key/value pairs, tensor infos (name, dims innermost first, type, offset), padding to
 * `general.alignment` (32), then each tensor's data at a 32-byte aligned offset.
 *
 * The content follows llama.cpp's own converter (convert_lora_to_gguf.py): metadata
 * `general.type = "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha`; one `.lora_a`
 * (PEFT `lora_A`, `[r, in]`) and one `.lora_b` (`lora_B`, `[out, r]`) tensor per adapted
 * weight, named after the base tensor in llama.cpp's naming (`blk.0.attn_q.weight`); and for
 * Llama-architecture models the rows of q/k `lora_B` permuted exactly as the converter permutes
 * the q/k weights (llama.cpp applies RoPE to interleaved pairs, transformers to halves).
 * llama.cpp scales the update by `alpha / r`; for rsLoRA adapters the stored alpha is
 * `lora_alpha · √r` so the scale equals PEFT's `lora_alpha / √r`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { StudioError } from '../../shared/errors';
import { readAdapterConfig } from '../lora/adapter';
import { readModelConfig } from '../models/loader';
import type { ModelConfig } from '../models/config';
import { readSafetensorsHeader, readTensorAsFloat32 } from '../models/safetensors';

export const GGUF_ALIGNMENT = 32;

const GGUF_VALUE = { UINT32: 4, FLOAT32: 6, STRING: 8 } as const;
const GGML_TYPE_F32 = 0;

type MetadataValue = { type: 'string'; value: string } | { type: 'uint32'; value: number } | { type: 'float32'; value: number };

export interface GgufTensor {
  name: string;
  /** Row-major shape as PyTorch and safetensors write it; GGUF stores it reversed. */
  shape: number[];
  data: Float32Array;
}

/** llama.cpp's tensor name for a Hugging Face module path, or undefined when it has none. */
export function ggufTensorName(modulePath: string, family: ModelConfig['family']): string | undefined {
  if (modulePath === 'lm_head') return 'output.weight';
  const gpt2 = /^transformer\.h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)$/.exec(modulePath);
  if (family === 'gpt2' && gpt2) {
    const names: Record<string, string> = { 'attn.c_attn': 'attn_qkv', 'attn.c_proj': 'attn_output', 'mlp.c_fc': 'ffn_up', 'mlp.c_proj': 'ffn_down' };
    return `blk.${gpt2[1]}.${names[gpt2[2]]}.weight`;
  }
  const llama = /^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)$/.exec(modulePath);
  if (!llama) return undefined;
  const names: Record<string, string> = {
    q_proj: 'attn_q',
    k_proj: 'attn_k',
    v_proj: 'attn_v',
    o_proj: 'attn_output',
    gate_proj: 'ffn_gate',
    up_proj: 'ffn_up',
    down_proj: 'ffn_down',
  };
  return names[llama[3]] ? `blk.${llama[1]}.${names[llama[3]]}.weight` : undefined;
}

/** llama.cpp's architecture name: Mistral checkpoints load as `llama`. */
export function ggufArchitecture(config: ModelConfig): string {
  switch (config.architecture) {
    case 'GPT2LMHeadModel':
      return 'gpt2';
    case 'Qwen2ForCausalLM':
      return 'qwen2';
    default:
      return 'llama';
  }
}

/**
 * Reorders the rows of `[out, r]` so each head's halves become interleaved pairs: row
 * `(head, pair, half)` takes row `(head, half, pair)`. This is the converter's q/k permutation
 * applied to the output dimension, which is the only one lora_B has.
 */
export function permuteRowsForRope(data: Float32Array, rows: number, columns: number, heads: number): Float32Array {
  const headDim = rows / heads;
  const half = headDim / 2;
  const out = new Float32Array(data.length);
  for (let head = 0; head < heads; head++) {
    for (let pair = 0; pair < half; pair++) {
      for (let which = 0; which < 2; which++) {
        const target = head * headDim + pair * 2 + which;
        const source = head * headDim + which * half + pair;
        out.set(data.subarray(source * columns, (source + 1) * columns), target * columns);
      }
    }
  }
  return out;
}

/** Converts a PEFT adapter folder into GGUF tensors and metadata for the base model in `modelDir`. */
export function ggufLoraContents(adapterDir: string, modelDir: string): { metadata: Record<string, MetadataValue>; tensors: GgufTensor[] } {
  const adapter = readAdapterConfig(adapterDir);
  const model = readModelConfig(modelDir);
  const header = readSafetensorsHeader(path.join(adapterDir, 'adapter_model.safetensors'));
  const permute = ggufArchitecture(model) === 'llama';
  const tensors: GgufTensor[] = [];
  let rank = adapter.r;

  for (const key of [...header.tensors.keys()].sort()) {
    const match = /^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(key);
    if (!match) {
      throw new StudioError('EXPORT_FAILED', `${key} in ${adapterDir} is not a lora_A or lora_B tensor.`, 'Only plain LoRA adapters can be written as GGUF.');
    }
    const [, modulePath, which] = match;
    const name = ggufTensorName(modulePath, model.family);
    if (!name || (name === 'output.weight' && model.tieWordEmbeddings)) {
      throw new StudioError('EXPORT_FAILED', `llama.cpp has no tensor for ${modulePath}${name ? ' (the LM head is tied to the embeddings)' : ''}.`, 'Export this adapter in PEFT format instead, or train without that module.');
    }
    const info = header.tensors.get(key)!;
    let data = readTensorAsFloat32(header, key);
    if (which === 'B' && permute && /\.(q_proj|k_proj)$/.test(modulePath)) {
      const heads = modulePath.endsWith('q_proj') ? model.numHeads : model.numKeyValueHeads;
      data = permuteRowsForRope(data, info.shape[0], info.shape[1], heads);
    }
    if (which === 'A') rank = info.shape[0];
    tensors.push({ name: `${name}.lora_${which.toLowerCase()}`, shape: info.shape, data });
  }

  const alpha = adapter.use_rslora ? adapter.lora_alpha * Math.sqrt(rank) : adapter.lora_alpha;
  const metadata: Record<string, MetadataValue> = {
    'general.architecture': { type: 'string', value: ggufArchitecture(model) },
    'general.type': { type: 'string', value: 'adapter' },
    'general.name': { type: 'string', value: path.basename(path.resolve(adapterDir)) },
    'general.file_type': { type: 'uint32', value: 0 },
    'general.alignment': { type: 'uint32', value: GGUF_ALIGNMENT },
    'adapter.type': { type: 'string', value: 'lora' },
    'adapter.lora.alpha': { type: 'float32', value: alpha },
  };
  return { metadata, tensors };
}

/** Writes a GGUF file with float32 tensors. */
export function writeGguf(file: string, metadata: Record<string, MetadataValue>, tensors: GgufTensor[]): void {
  const parts: Buffer[] = [];
  const u32 = (value: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value);
    return b;
  };
  const u64 = (value: number | bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(value));
    return b;
  };
  const string = (value: string) => {
    const bytes = Buffer.from(value, 'utf8');
    return Buffer.concat([u64(bytes.length), bytes]);
  };

  parts.push(Buffer.from('GGUF', 'ascii'), u32(3), u64(tensors.length), u64(Object.keys(metadata).length));
  for (const [key, entry] of Object.entries(metadata)) {
    parts.push(string(key));
    if (entry.type === 'string') parts.push(u32(GGUF_VALUE.STRING), string(entry.value));
    else if (entry.type === 'uint32') parts.push(u32(GGUF_VALUE.UINT32), u32(entry.value));
    else {
      const b = Buffer.alloc(4);
      b.writeFloatLE(entry.value);
      parts.push(u32(GGUF_VALUE.FLOAT32), b);
    }
  }

  let offset = 0;
  const offsets: number[] = [];
  for (const tensor of tensors) {
    offsets.push(offset);
    const dims = [...tensor.shape].reverse();
    parts.push(string(tensor.name), u32(dims.length), ...dims.map((d) => u64(d)), u32(GGML_TYPE_F32), u64(offset));
    offset = align(offset + tensor.data.byteLength);
  }
  const headerLength = parts.reduce((sum, part) => sum + part.length, 0);
  parts.push(Buffer.alloc(align(headerLength) - headerLength));

  tensors.forEach((tensor, i) => {
    const bytes = Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
    parts.push(bytes);
    const end = offsets[i] + bytes.length;
    const next = i + 1 < tensors.length ? offsets[i + 1] : align(end);
    parts.push(Buffer.alloc(next - end));
  });
  fs.writeFileSync(file, Buffer.concat(parts));
}

function align(value: number): number {
  return Math.ceil(value / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
}
