/**
 * `eval` and `generate`: in-process inference with a model and an optional adapter.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { StudioError } from '../shared/errors';
import { selectBackend } from '../engine/backend';
import { encodeRecord } from '../engine/data/encode';
import type { NormalizedRecord } from '../engine/data/normalize';
import { generate } from '../engine/generate';
import { loadAdapter } from '../engine/lora/adapter';
import { batchLoss, loadModel, type LoadedModel } from '../engine/models';
import { eosIds } from '../engine/models/config';
import { loadTokenizer, type Tokenizer } from '../engine/tokenizer';
import { importDataset, readNormalized } from '../services/datasets';
import { formatHelp, numberFlag, parseCommand, requireFlag, stringFlag, type OptionTable } from './args';

const EVAL_OPTIONS: OptionTable = {
  model: { type: 'string', help: 'Hugging Face model folder' },
  adapter: { type: 'string', help: 'PEFT adapter folder to apply' },
  data: { type: 'string', help: 'dataset file (any format train accepts)' },
  schema: { type: 'string', help: 'dataset schema instead of detection' },
  'max-seq-length': { type: 'string', help: 'truncate examples to this many tokens (default 512)' },
  'train-on-prompt': { type: 'boolean', help: 'also score prompt and user tokens (default: completion/assistant tokens only, as in training)' },
  backend: { type: 'string', help: 'force a backend: tensorflow-gpu, tensorflow, wasm or cpu' },
  json: { type: 'boolean', help: 'print {mean_loss, perplexity, examples: [{index, loss, tokens}]}' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
};

/**
 * Scores every example with the training masking rules. `loss` per example is the mean over its
 * predicted tokens; `mean_loss` is the mean over all predicted tokens of the dataset.
 */
export async function evalCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(argv, EVAL_OPTIONS, false);
  if (values.help) {
    process.stdout.write(formatHelp('lora-studio eval --model DIR [--adapter DIR] --data FILE [--json]', 'Computes the mean loss and perplexity of a model (with an adapter) on a dataset.', EVAL_OPTIONS));
    return 0;
  }
  const modelPath = path.resolve(requireFlag(values, 'model', 'Pass --model with a Hugging Face model folder.'));
  const dataPath = path.resolve(requireFlag(values, 'data', 'Pass --data with a dataset file.'));
  const maxSeqLength = numberFlag(values, 'max-seq-length', { integer: true, min: 2 }) ?? 512;
  await selectBackend({ force: stringFlag(values, 'backend') as never });
  const loaded = prepareModel(modelPath, stringFlag(values, 'adapter'));
  const tokenizer = await loadTokenizer(modelPath).catch(() => undefined);

  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-studio-eval-'));
  const examples: { index: number; loss: number; tokens: number }[] = [];
  let total = 0;
  let count = 0;
  try {
    const imported = await importDataset(dataPath, { appDataDir: scratch, schemaOverride: stringFlag(values, 'schema') as never });
    let index = 0;
    for await (const record of readNormalized(imported.storedPath)) {
      const encoded = encodeRecord(record as NormalizedRecord, tokenizer, { maxSeqLength, trainOnPrompt: Boolean(values['train-on-prompt']) });
      const current = index++;
      if (!encoded.ok) continue;
      const { input_ids, labels } = encoded.example;
      const tokens = labels.slice(1).filter((label) => label !== -100).length;
      if (tokens === 0) continue;
      const loss = tf.tidy(() => batchLoss(loaded.model, { inputIds: [input_ids], labels: [labels] }));
      const value = loss.dataSync()[0];
      loss.dispose();
      examples.push({ index: current, loss: value, tokens });
      total += value * tokens;
      count += tokens;
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
    loaded.model.dispose();
  }
  if (count === 0) {
    throw new StudioError('DATASET_EMPTY', `${dataPath} has no example with tokens to score.`, 'Check the dataset with `lora-studio datasets import`.');
  }
  const meanLoss = total / count;
  const result = { mean_loss: meanLoss, perplexity: Math.exp(meanLoss), examples };
  if (values.json) process.stdout.write(JSON.stringify(result) + '\n');
  else process.stdout.write(`examples ${examples.length}, tokens ${count}, mean loss ${meanLoss.toFixed(4)}, perplexity ${result.perplexity.toFixed(3)}\n`);
  return 0;
}

const GENERATE_OPTIONS: OptionTable = {
  model: { type: 'string', help: 'Hugging Face model folder' },
  adapter: { type: 'string', help: 'PEFT adapter folder to apply' },
  prompt: { type: 'string', help: 'prompt text (tokenized with the model\'s tokenizer)' },
  'prompt-ids': { type: 'string', help: 'prompt as comma-separated token ids, e.g. 1,2,3' },
  chat: { type: 'boolean', help: 'wrap --prompt as a user turn with the chat template' },
  'max-new-tokens': { type: 'string', help: 'tokens to generate at most (default 64)' },
  temperature: { type: 'string', help: '0 is greedy; above 0 samples (default 0)' },
  'top-p': { type: 'string', help: 'nucleus sampling threshold in (0, 1] (default 1)' },
  seed: { type: 'string', help: 'sampling seed (default 0)' },
  backend: { type: 'string', help: 'force a backend: tensorflow-gpu, tensorflow, wasm or cpu' },
  json: { type: 'boolean', help: 'print {prompt_ids, token_ids, text, finish_reason}' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
};

export async function generateCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(argv, GENERATE_OPTIONS, false);
  if (values.help) {
    process.stdout.write(formatHelp('lora-studio generate --model DIR [--adapter DIR] (--prompt TEXT | --prompt-ids 1,2,3) [options]', 'Generates text with a model and an optional adapter.', GENERATE_OPTIONS));
    return 0;
  }
  const modelPath = path.resolve(requireFlag(values, 'model', 'Pass --model with a Hugging Face model folder.'));
  const prompt = stringFlag(values, 'prompt');
  const promptIdsFlag = stringFlag(values, 'prompt-ids');
  if ((prompt === undefined) === (promptIdsFlag === undefined)) {
    throw new StudioError('INVALID_ARGUMENT', 'Pass exactly one of --prompt and --prompt-ids.', 'Use --prompt "text" or --prompt-ids 1,2,3.');
  }
  await selectBackend({ force: stringFlag(values, 'backend') as never });
  const loaded = prepareModel(modelPath, stringFlag(values, 'adapter'));
  let tokenizer: Tokenizer | undefined;
  let promptIds: number[];
  if (promptIdsFlag !== undefined) {
    promptIds = promptIdsFlag.split(',').map((part) => Number(part.trim()));
    if (promptIds.some((id) => !Number.isInteger(id))) {
      throw new StudioError('INVALID_ARGUMENT', `--prompt-ids must be comma-separated integers. Received: ${JSON.stringify(promptIdsFlag)}.`, 'Use e.g. --prompt-ids 1,2,3.');
    }
    tokenizer = await loadTokenizer(modelPath).catch(() => undefined);
  } else {
    tokenizer = await loadTokenizer(modelPath);
    const text = values.chat ? tokenizer.applyChatTemplate([{ role: 'user', content: prompt! }], { addGenerationPrompt: true }) : prompt!;
    promptIds = tokenizer.encode(text, { addSpecialTokens: !values.chat });
  }
  const eos = [...eosIds(loaded.config), ...(tokenizer?.eosTokenId !== undefined ? [tokenizer.eosTokenId] : [])];
  const imEnd = tokenizer?.tokenToId('<|im_end|>');
  if (imEnd !== undefined) eos.push(imEnd);
  try {
    const result = generate(loaded.model, promptIds, {
      maxNewTokens: numberFlag(values, 'max-new-tokens', { integer: true, min: 1 }) ?? 64,
      temperature: numberFlag(values, 'temperature', { min: 0 }) ?? 0,
      topP: numberFlag(values, 'top-p', { min: 0, exclusiveMin: true, max: 1 }) ?? 1,
      seed: numberFlag(values, 'seed', { integer: true, min: 0 }) ?? 0,
      eosTokenIds: [...new Set(eos)],
    });
    const text = tokenizer ? tokenizer.decode(result.tokenIds, { skipSpecialTokens: true }) : undefined;
    if (values.json) {
      process.stdout.write(JSON.stringify({ prompt_ids: promptIds, token_ids: result.tokenIds, text: text ?? null, finish_reason: result.finishReason }) + '\n');
    } else {
      process.stdout.write(`${text ?? result.tokenIds.join(',')}\n`);
    }
  } finally {
    loaded.model.dispose();
  }
  return 0;
}

function prepareModel(modelPath: string, adapter: string | undefined): LoadedModel {
  const loaded = loadModel(modelPath);
  if (adapter) loadAdapter(loaded.model, path.resolve(adapter));
  return loaded;
}
