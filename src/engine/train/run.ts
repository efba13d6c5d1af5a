/**
 * One training run from settings to adapter, as the worker process executes it. The steps: load
 * the model and tokenizer, add LoRA (or continue an adapter), encode the stored dataset, train
 * with validation and checkpoints, then save the final adapter and sample generations.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { StudioError } from '../../shared/errors';
import type { LogLevel, ProgressInfo, RunResult, StepMetrics } from '../../shared/protocol';
import type { TrainConfig } from '../../shared/train-config';
import { readNormalized } from '../../services/datasets';
import { selectBackend, summarizeReport } from '../backend';
import { encodeRecord, packExamples, splitTrainValidation, type TrainingExample } from '../data/encode';
import type { NormalizedRecord } from '../data/normalize';
import { generate } from '../generate';
import { applyLora, countParameters, formatTrainableParameters } from '../lora';
import { loadAdapter, writeAdapterFiles } from '../lora/adapter';
import { loadModel } from '../models';
import { eosIds, type ModelConfig } from '../models/config';
import type { CausalLM } from '../models/transformer';
import { loadTokenizer, type Tokenizer } from '../tokenizer';
import { quantizationReport, validateQuantSettings } from '../quant';
import { Trainer } from './trainer';

export interface RunHooks {
  log(level: LogLevel, message: string): void;
  progress(progress: ProgressInfo): void;
  metrics(metrics: StepMetrics): void;
  checkpoint(step: number, dir: string): void;
  /** Resolves when training may continue; called between steps. Returns 'cancel' to stop. */
  checkpointRequested(): 'continue' | 'pause' | 'cancel';
  /** Waits while paused; resolves to 'resume' or 'cancel'. */
  waitForResume(step: number, checkpoint: string): Promise<'resume' | 'cancel'>;
}

export interface SampleGeneration {
  prompt: string;
  before?: string;
  after?: string;
}

export interface RunOutcome extends RunResult {
  samples: SampleGeneration[];
}

/** Runs training for `config` inside `runDir` (checkpoints/, adapter/ are created there). */
export async function runTraining(config: TrainConfig, runDir: string, hooks: RunHooks, resumeFrom?: string): Promise<RunOutcome> {
  const backend = await selectBackend({ force: config.backend as never });
  hooks.log('info', summarizeReport(backend));

  hooks.progress({ step: 0, totalSteps: 0, epoch: 0, phase: 'loading' });
  if (config.method === 'qlora') config.quant ??= { quantType: 'nf4', blocksize: 64, doubleQuant: true };
  const quant = config.method === 'qlora' ? config.quant : undefined;
  if (quant) validateQuantSettings(quant);
  const { model, config: modelConfig } = loadModel(config.modelPath, { quantize: quant });
  let tokenizer: Tokenizer | undefined;
  let counts: ReturnType<typeof countParameters>;
  let train: TrainingExample[];
  let validation: TrainingExample[];
  try {
    checkSequenceLength(config.maxSeqLength, modelConfig, config.modelPath);
    tokenizer = await loadOptionalTokenizer(config.modelPath, hooks);
    if (quant) {
      const report = quantizationReport(model, quant);
      hooks.log('info', `quantized ${report.layers.length} linear layers to ${report.quantType}${report.doubleQuant ? ' with double quantization' : ''}: ${report.bytesPerParameter.toFixed(3)} bytes per parameter`);
    }
    prepareAdapters(model, config, hooks);
    counts = countParameters(model);
    hooks.log('info', formatTrainableParameters(counts));

    hooks.progress({ step: 0, totalSteps: 0, epoch: 0, phase: 'tokenizing' });
    ({ train, validation } = await loadExamples(config, tokenizer, hooks, modelConfig.vocabSize));
  } catch (error) {
    model.dispose();
    throw error;
  }
  const padTokenId = tokenizer?.padTokenId ?? modelConfig.padTokenId ?? eosIds(modelConfig)[0] ?? 0;
  const trainer = new Trainer({ model, train, validation, settings: config, padTokenId, baseModel: config.modelPath });

  const checkpointsDir = path.join(runDir, 'checkpoints');
  const adapterDir = path.join(runDir, 'adapter');
  fs.mkdirSync(checkpointsDir, { recursive: true });
  if (resumeFrom) {
    const state = trainer.loadCheckpoint(resumeFrom);
    hooks.log('info', `resumed from ${resumeFrom} at step ${state.step}`);
  }

  const samples = samplePrompts(config).map((prompt) => ({ prompt }) as SampleGeneration);
  if (!resumeFrom) fillSamples(samples, 'before', model, tokenizer, modelConfig.eosTokenId, config.seed);

  const saveCheckpoint = () => {
    const dir = trainer.saveCheckpoint(path.join(checkpointsDir, `step-${String(trainer.step).padStart(6, '0')}`), { config });
    hooks.checkpoint(trainer.step, dir);
    return dir;
  };

  let status: RunResult['status'] = 'completed';
  let lastCheckpoint: string | undefined;
  const started = performance.now();
  const startStep = trainer.step;
  try {
    while (trainer.step < trainer.totalSteps) {
      const request = hooks.checkpointRequested();
      if (request === 'cancel') {
        status = 'cancelled';
        lastCheckpoint = saveCheckpoint();
        break;
      }
      if (request === 'pause') {
        lastCheckpoint = saveCheckpoint();
        if ((await hooks.waitForResume(trainer.step, lastCheckpoint)) === 'cancel') {
          status = 'cancelled';
          break;
        }
      }

      const result = trainer.trainStep();
      const valLoss = shouldRun(trainer.step, config.evalSteps, trainer.totalSteps) ? trainer.evaluate() : null;
      const elapsed = (performance.now() - started) / 1000;
      const rate = (trainer.step - startStep) / Math.max(elapsed, 1e-9);
      hooks.progress({ step: trainer.step, totalSteps: trainer.totalSteps, epoch: result.epoch, etaSeconds: (trainer.totalSteps - trainer.step) / rate, phase: 'training' });
      hooks.metrics({
        step: result.step,
        epoch: result.epoch,
        loss: result.loss,
        valLoss: valLoss ?? undefined,
        lr: result.learningRate,
        gradNorm: result.gradNorm,
        tokensPerSecond: result.tokens / (result.timeMs / 1000),
        memoryBytes: tf.memory().numBytes,
        timeMs: result.timeMs,
      });
      if (shouldRun(trainer.step, config.saveSteps, trainer.totalSteps) && trainer.step < trainer.totalSteps) lastCheckpoint = saveCheckpoint();
      await new Promise((resolve) => setImmediate(resolve));
    }
  } catch (error) {
    if (error instanceof StudioError && error.code === 'NAN_LOSS') {
      hooks.log('error', `${error.message} Last good checkpoint: ${lastCheckpoint ?? resumeFrom ?? 'none'}`);
    }
    trainer.dispose();
    model.dispose();
    throw error;
  }

  hooks.progress({ step: trainer.step, totalSteps: trainer.totalSteps, epoch: trainer.epochAt(trainer.step), phase: 'saving' });
  fs.rmSync(adapterDir, { recursive: true, force: true });
  fs.mkdirSync(adapterDir, { recursive: true });
  writeAdapterFiles(model, config.lora, adapterDir, config.modelPath);
  if (status === 'completed') fillSamples(samples, 'after', model, tokenizer, modelConfig.eosTokenId, config.seed);
  const result: RunOutcome = {
    status,
    steps: trainer.step,
    finalLoss: trainer.lastLoss ?? undefined,
    bestValLoss: trainer.bestValLoss ?? undefined,
    adapterPath: adapterDir,
    checkpoint: lastCheckpoint,
    trainableParameters: counts.trainable,
    totalParameters: counts.total,
    backend: backend.chosen,
    samples,
  };
  fs.writeFileSync(path.join(runDir, 'result.json'), JSON.stringify(result, null, 2) + '\n');
  trainer.dispose();
  model.dispose();
  return result;
}

/** Adds fresh LoRA layers, or loads the adapter to continue from. */
function prepareAdapters(model: CausalLM, config: TrainConfig, hooks: RunHooks): void {
  if (config.initAdapter) {
    const adapter = loadAdapter(model, config.initAdapter);
    config.lora = { ...adapter.settings, loraDropout: config.lora.loraDropout };
    hooks.log('info', `continuing adapter ${config.initAdapter} (${adapter.modules.length} layers, r=${adapter.settings.r})`);
    return;
  }
  applyLora(model, config.lora, config.seed);
}

async function loadOptionalTokenizer(modelDir: string, hooks: RunHooks): Promise<Tokenizer | undefined> {
  try {
    return await loadTokenizer(modelDir);
  } catch (error) {
    if (error instanceof StudioError && error.code === 'TOKENIZER_MISSING') {
      hooks.log('warn', `${modelDir} has no tokenizer; only pre-tokenized data (input_ids) can be used.`);
      return undefined;
    }
    throw error;
  }
}

/**
 * Learned position embeddings (GPT-2) hold n_positions rows, so longer sequences have no
 * position to look up; rotary positions (Llama, Qwen2) have no such table.
 *
 * @throws StudioError INVALID_ARGUMENT when `maxSeqLength` exceeds the learned positions.
 */
export function checkSequenceLength(maxSeqLength: number, modelConfig: ModelConfig, modelPath: string): void {
  if (modelConfig.family !== 'gpt2' || maxSeqLength <= modelConfig.maxPositionEmbeddings) return;
  throw new StudioError(
    'INVALID_ARGUMENT',
    `Max sequence length ${maxSeqLength} is longer than the ${modelConfig.maxPositionEmbeddings} learned positions (n_positions) of ${modelPath}.`,
    `Lower max sequence length to ${modelConfig.maxPositionEmbeddings} or less.`,
  );
}

/**
 * Encodes the stored dataset(s) into training and validation examples. `vocabSize` (the
 * model's config.json vocab_size) bounds the token ids and labels; records outside it are skipped.
 */
export async function loadExamples(
  config: TrainConfig,
  tokenizer: Tokenizer | undefined,
  hooks: Pick<RunHooks, 'log'>,
  vocabSize?: number,
): Promise<{ train: TrainingExample[]; validation: TrainingExample[] }> {
  if (!config.datasetPath) {
    throw new StudioError('INVALID_ARGUMENT', 'The run has no dataset.', 'Import a dataset and choose it for the run.');
  }
  const limit = vocabSize !== undefined && tokenizer ? Math.min(vocabSize, tokenizer.vocabSize) : (vocabSize ?? tokenizer?.vocabSize);
  let firstSkip: string | undefined;
  const encodeAll = async (file: string) => {
    const examples: TrainingExample[] = [];
    let skipped = 0;
    let truncated = 0;
    let line = 0;
    for await (const record of readNormalized(file)) {
      line++;
      const result = encodeRecord(record as NormalizedRecord, tokenizer, { maxSeqLength: config.maxSeqLength, trainOnPrompt: config.trainOnPrompt, vocabSize: limit });
      if (!result.ok) {
        skipped++;
        if (skipped === 1) hooks.log('warn', `record ${line} of ${file} skipped: ${result.message}`);
        firstSkip ??= `record ${line}: ${result.message}`;
        continue;
      }
      if (result.truncated) truncated++;
      if (result.example.labels.some((label, i) => i > 0 && label !== -100)) examples.push(result.example);
      else skipped++;
    }
    hooks.log('info', `encoded ${examples.length} examples from ${file} (${skipped} skipped, ${truncated} truncated to ${config.maxSeqLength} tokens)`);
    return examples;
  };

  const all = await encodeAll(config.datasetPath);
  let split: { train: TrainingExample[]; validation: TrainingExample[] };
  if (config.validationPath) split = { train: all, validation: await encodeAll(config.validationPath) };
  else split = splitTrainValidation(all, config.validationSplit, config.seed);
  if (config.packing) split = { train: packExamples(split.train, config.maxSeqLength), validation: split.validation };
  if (split.train.length === 0) {
    const reason = firstSkip ? ` First skipped ${firstSkip}.` : '';
    throw new StudioError(
      'DATASET_EMPTY',
      `No training examples remain in ${config.datasetPath} after encoding.${reason}`,
      'Check that rows have completion or assistant text and token ids below the vocabulary size; see the import report.',
    );
  }
  return split;
}

function samplePrompts(config: TrainConfig): string[] {
  return (config.samplePrompts ?? []).filter((prompt) => prompt.trim().length > 0).slice(0, 4);
}

function fillSamples(samples: SampleGeneration[], key: 'before' | 'after', model: CausalLM, tokenizer: Tokenizer | undefined, eos: number | number[] | undefined, seed: number): void {
  if (!tokenizer) return;
  for (const sample of samples) {
    sample[key] = generateText(model, tokenizer, sample.prompt, { eos, seed, maxNewTokens: 48 });
  }
}

/** Renders `prompt` as a user turn with the chat template, generates greedily and decodes. */
export function generateText(model: CausalLM, tokenizer: Tokenizer, prompt: string, options: { eos?: number | number[]; seed?: number; maxNewTokens?: number; temperature?: number; topP?: number; chat?: boolean }): string {
  const text = options.chat === false ? prompt : tokenizer.applyChatTemplate([{ role: 'user', content: prompt }], { addGenerationPrompt: true });
  const ids = tokenizer.encode(text, { addSpecialTokens: options.chat === false });
  const eosList = [...new Set([...eosIds({ eosTokenId: options.eos }), ...(tokenizer.eosTokenId !== undefined ? [tokenizer.eosTokenId] : []), ...imEnd(tokenizer)])];
  const result = generate(model, ids, { maxNewTokens: options.maxNewTokens ?? 48, temperature: options.temperature ?? 0, topP: options.topP, seed: options.seed, eosTokenIds: eosList });
  return tokenizer.decode(result.tokenIds, { skipSpecialTokens: true }).trim();
}

function imEnd(tokenizer: Tokenizer): number[] {
  const id = tokenizer.tokenToId('<|im_end|>');
  return id === undefined ? [] : [id];
}

function shouldRun(step: number, every: number, total: number): boolean {
  return step === total || (every > 0 && step % every === 0);
}
