/** Paths and readers for the reference fixtures computed with transformers and PEFT. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SHARED = path.resolve(REPO_ROOT, '..', 'shared');
export const FIXTURES = path.join(SHARED, 'fixtures');
export const DATASETS = path.join(SHARED, 'datasets');

export const FIXTURE_MODELS = ['gpt2-tiny', 'llama-gqa-untied', 'qwen2-tiny', 'mistral-tiny'] as const;
export type FixtureModel = (typeof FIXTURE_MODELS)[number];

export interface ReferenceOutput {
  input_ids: number[][];
  attention_mask?: number[][];
  labels: number[][];
  logits: Float32Array;
  logitsShape: number[];
  loss: number;
}

export function modelDir(name: FixtureModel): string {
  return path.join(FIXTURES, 'models', name);
}

export function adapterDir(name: FixtureModel): string {
  return path.join(FIXTURES, 'adapters', `${name}-lora`);
}

export function readJson<T = any>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

/** Reads `reference/<model>[-lora].<input>.json` and decodes its base64 float32 logits. */
export function readReference(model: FixtureModel, input: 'basic' | 'masked', withAdapter: boolean): ReferenceOutput {
  const raw = readJson(path.join(FIXTURES, 'reference', `${model}${withAdapter ? '-lora' : ''}.${input}.json`));
  const bytes = Buffer.from(raw.logits.data, 'base64');
  const logits = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  return {
    input_ids: raw.input_ids,
    attention_mask: raw.attention_mask ?? undefined,
    labels: raw.labels ?? raw.input_ids,
    logits,
    logitsShape: raw.logits.shape,
    loss: raw.loss,
  };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}
