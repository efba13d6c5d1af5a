/**
 * Exports of a trained adapter: the PEFT adapter folder (loads with PeftModel.from_pretrained)
 * and a merged Hugging Face model folder (loads with AutoModelForCausalLM.from_pretrained). Each
 * export is written under a temporary name beside the destination and renamed when complete, so
 * a failed export leaves nothing half-written.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { StudioError } from '../../shared/errors';
import { loadAdapter } from '../lora/adapter';
import { mergeLora } from '../lora';
import { loadModel } from '../models';
import { writeSafetensors } from '../models/safetensors';
import { checkpointTensors } from '../models/transformer';
import { ggufLoraContents, writeGguf } from './gguf';

/** Facts about the run that produced an export, written as run_card.json. */
export interface RunCard {
  runId?: string;
  name?: string;
  baseModel: string;
  method: string;
  datasetSha256?: string;
  datasetName?: string;
  seed?: number;
  config?: unknown;
  finalMetrics?: Record<string, number | null | undefined>;
  versions: Record<string, string>;
  createdAt: string;
}

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt', 'tokenizer.model', 'generation_config.json'];

/** Library versions for run cards. */
export function libraryVersions(): Record<string, string> {
  return { 'lora-studio': readOwnVersion(), 'tfjs-core': tf.version_core, node: process.versions.node, backend: tf.getBackend() ?? 'none' };
}

/** Copies a PEFT adapter folder to `destination`, adding `run_card.json` and a README. */
export function exportPeftAdapter(adapterDir: string, destination: string, card: RunCard): string {
  for (const file of ['adapter_config.json', 'adapter_model.safetensors']) {
    if (!fs.existsSync(path.join(adapterDir, file))) {
      throw new StudioError('EXPORT_FAILED', `The run's adapter folder ${adapterDir} has no ${file}.`, 'The run has not produced an adapter yet; export after it completes, or from a checkpoint.');
    }
  }
  return writeAtomically(destination, (temporary) => {
    fs.copyFileSync(path.join(adapterDir, 'adapter_config.json'), path.join(temporary, 'adapter_config.json'));
    fs.copyFileSync(path.join(adapterDir, 'adapter_model.safetensors'), path.join(temporary, 'adapter_model.safetensors'));
    writeRunCard(temporary, card);
  });
}

/**
 * Loads the base model, applies the adapter, merges `W + scaling · B · A` into every adapted
 * weight, and writes a Hugging Face folder: config.json, model.safetensors (float32), tokenizer
 * and generation files copied from the base folder, and the run card.
 */
export function exportMergedModel(modelDir: string, adapterDir: string, destination: string, card: RunCard): string {
  return writeAtomically(destination, (temporary) => {
    const { model } = loadModel(modelDir);
    try {
      loadAdapter(model, adapterDir);
      mergeLora(model);
      writeSafetensors(path.join(temporary, 'model.safetensors'), checkpointTensors(model), { format: 'pt' });
    } finally {
      model.dispose();
    }
    const config = JSON.parse(fs.readFileSync(path.join(modelDir, 'config.json'), 'utf8'));
    config.torch_dtype = 'float32';
    fs.writeFileSync(path.join(temporary, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    for (const file of TOKENIZER_FILES) {
      const source = path.join(modelDir, file);
      if (fs.existsSync(source)) fs.copyFileSync(source, path.join(temporary, file));
    }
    writeRunCard(temporary, card);
  });
}

/**
 * Writes the adapter as a llama.cpp GGUF LoRA file (`adapter.gguf`) into `destination`, with the
 * run card beside it.
 */
export function exportGgufAdapter(adapterDir: string, modelDir: string, destination: string, card: RunCard): string {
  return writeAtomically(destination, (temporary) => {
    const { metadata, tensors } = ggufLoraContents(adapterDir, modelDir);
    writeGguf(path.join(temporary, 'adapter.gguf'), metadata, tensors);
    writeRunCard(temporary, card);
  });
}

/**
 * Runs `write` on an empty temporary folder beside `destination`, then renames it into place.
 * An existing non-empty destination is an error, never overwritten.
 */
export function writeAtomically(destination: string, write: (temporary: string) => void): string {
  const target = path.resolve(destination);
  if (fs.existsSync(target) && (!fs.statSync(target).isDirectory() || fs.readdirSync(target).length > 0)) {
    throw new StudioError('EXPORT_FAILED', `${target} already exists and is not empty.`, 'Choose a new folder name, or delete the existing folder first.');
  }
  const temporary = path.join(path.dirname(target), `.${path.basename(target)}.partial-${process.pid}-${Date.now()}`);
  try {
    makeDirectories(path.dirname(target));
    fs.mkdirSync(temporary);
    write(temporary);
    if (fs.existsSync(target)) fs.rmdirSync(target);
    fs.renameSync(temporary, target);
    return target;
  } catch (error) {
    fs.rmSync(temporary, { recursive: true, force: true });
    if (error instanceof StudioError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    throw new StudioError('EXPORT_FAILED', `Writing ${target} failed: ${code ?? (error as Error).message}.`, code === 'ENOSPC' ? 'Free disk space and try again.' : code === 'EACCES' ? 'Choose a folder you can write to.' : 'Check the destination folder and try again.');
  }
}

/**
 * Creates `dir` and its missing parents one level at a time. Node 20's `mkdirSync(dir, {recursive:
 * true})` never returns for a path under /proc, where mkdir reports ENOENT although the parent
 * exists; single-level calls fail with that error instead.
 */
function makeDirectories(dir: string): void {
  const missing: string[] = [];
  let current = dir;
  while (!fs.existsSync(current)) {
    missing.unshift(current);
    const parent = path.dirname(current);
    if (parent === current) break;
    current = parent;
  }
  for (const folder of missing) fs.mkdirSync(folder);
}

function writeRunCard(dir: string, card: RunCard): void {
  fs.writeFileSync(path.join(dir, 'run_card.json'), JSON.stringify(card, null, 2) + '\n');
  const metrics = Object.entries(card.finalMetrics ?? {})
    .filter(([, value]) => value !== undefined && value !== null)
    .map(([key, value]) => `- ${key}: ${value}`)
    .join('\n');
  const readme = [
    `# ${card.name ?? card.runId ?? 'LoRA adapter'}`,
    '',
    `LoRA fine-tune of \`${card.baseModel}\` made with LoRA Studio (${card.method}).`,
    '',
    card.datasetSha256 ? `Dataset: ${card.datasetName ?? 'unnamed'} (SHA-256 ${card.datasetSha256})` : '',
    card.seed !== undefined ? `Seed: ${card.seed}` : '',
    '',
    metrics ? `## Final metrics\n\n${metrics}\n` : '',
    '## Load with PEFT',
    '',
    '```python',
    'from transformers import AutoModelForCausalLM',
    'from peft import PeftModel',
    `base = AutoModelForCausalLM.from_pretrained("${card.baseModel}")`,
    'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
    '```',
    '',
    'The full settings are in run_card.json.',
    '',
  ]
    .filter((line, i, lines) => !(line === '' && lines[i - 1] === ''))
    .join('\n');
  fs.writeFileSync(path.join(dir, 'README.md'), readme);
}

function readOwnVersion(): string {
  let dir = path.dirname(new URL(import.meta.url).pathname);
  for (let i = 0; i < 6; i++) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file)) {
      const pkg = JSON.parse(fs.readFileSync(file, 'utf8'));
      if (pkg.name === 'lora-studio') return pkg.version;
    }
    dir = path.dirname(dir);
  }
  return 'unknown';
}
