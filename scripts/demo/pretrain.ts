/**
 * Builds the demo resources from nothing: the corpus, a byte-level BPE tokenizer trained on it, a
 * small Llama pretrained on it with full-parameter AdamW, and the sample fine-tuning dataset.
 *
 * Usage (through the bundler, see build.mjs): `node scripts/demo/build.mjs [--steps N] [--out DIR]`.
 * `--out` defaults to `resources/`; the model goes to `<out>/demo-model`, the data to
 * `<out>/demo-data`. Every random choice comes from a fixed seed and the wasm backend runs on one
 * thread, so the same command on the same machine writes the same files.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '../../src/engine/backend';
import { batchLoss, type CausalLM } from '../../src/engine/models';
import { writeSafetensors } from '../../src/engine/models/safetensors';
import { checkpointTensors } from '../../src/engine/models/transformer';
import { loadTokenizer, type ChatMessage, type Tokenizer } from '../../src/engine/tokenizer';
import { AdamW, clipGlobalNorm } from '../../src/engine/train/optimizer';
import { deriveSeed, SeededRandom } from '../../src/engine/train/random';
import { learningRateAt } from '../../src/engine/train/schedule';
import { generateCorpus } from './corpus';
import { datasetFiles } from './dataset';
import { ARCHITECTURE, greedyGenerate, initialWeights, modelConfigJson, parameterGroups, trainableModel } from './model';
import { CORPUS, MAX_VOCAB_SIZE, SEED, SPECIAL_TOKENS, TRAINING } from './settings';
import { tokenizerConfig, tokenizerJson, trainBpe } from './tokenizer';

interface Arguments {
  outDir: string;
  steps: number;
}

async function main(): Promise<void> {
  const args = parseArguments(process.argv.slice(2));
  const modelDir = path.join(args.outDir, 'demo-model');
  const dataDir = path.join(args.outDir, 'demo-data');
  const report = await selectBackend({ force: 'wasm' });
  print(`backend ${report.chosen} (simd=${report.simd}, threads=${report.threads ?? 'several'})`);

  // 1. Corpus.
  const corpus = generateCorpus(CORPUS);
  const corpusCharacters = corpus.documents.reduce((sum, d) => sum + d.length, 0);
  print(`corpus: ${corpus.documents.length} documents (${corpusCharacters} characters), ${corpus.chats.length} chats`);

  // 2. Tokenizer, written first so the engine's own loader tokenizes the corpus.
  const staging = `${modelDir}.tmp-${process.pid}`;
  fs.rmSync(staging, { recursive: true, force: true });
  fs.mkdirSync(staging, { recursive: true });
  const chatTexts = corpus.chats.map((chat) => renderChatML(chat));
  const bpe = trainBpe([...corpus.documents, ...chatTexts], { vocabSize: MAX_VOCAB_SIZE, specialTokens: SPECIAL_TOKENS });
  const roles = { bos: '<|endoftext|>', eos: '<|endoftext|>', pad: '<|endoftext|>' };
  writeJson(path.join(staging, 'tokenizer.json'), tokenizerJson(bpe), false);
  writeJson(path.join(staging, 'tokenizer_config.json'), tokenizerConfig(bpe, roles, ARCHITECTURE.max_position_embeddings));
  const tokenizer = await loadTokenizer(staging);
  checkRoundTrip(tokenizer, [...corpus.documents.slice(0, 300), ...corpus.chats.slice(0, 100).map((c) => tokenizer.applyChatTemplate(c))]);
  print(`tokenizer: ${bpe.vocab.size} tokens (${bpe.merges.length} merges), round trip checked`);

  // 3. Token stream, cut into training and validation chunks.
  const { train, validation, tokenCount } = tokenChunks(corpus.documents, corpus.chats, tokenizer);
  print(`tokens: ${tokenCount} (${(corpusCharacters / tokenCount).toFixed(2)} characters per token in documents and chats), ${train.length} training and ${validation.length} validation chunks of ${TRAINING.sequenceLength}`);

  // 4. Model and pretraining.
  const endOfText = tokenizer.tokenToId('<|endoftext|>')!;
  const imEnd = tokenizer.tokenToId('<|im_end|>')!;
  // Generation stops at either end token: `<|im_end|>` closes a chat turn, `<|endoftext|>` a text.
  const config = modelConfigJson(bpe.vocab.size, { bos: endOfText, eos: [endOfText, imEnd], pad: endOfText }, 'float16');
  const model = trainableModel(config, initialWeights(config, deriveSeed(SEED, 1)));
  print(`model: ${model.parameterCount()} parameters`);
  const samplePrompts = sampleInputs(tokenizer);
  printSamples('before pretraining', model, tokenizer, samplePrompts, [endOfText, imEnd]);

  const initialValidation = validationLoss(model, validation);
  const curve = pretrain(model, train, args.steps);
  const finalValidation = validationLoss(model, validation);
  print(`validation loss: ${initialValidation.toFixed(4)} before, ${finalValidation.toFixed(4)} after (ln(vocab) = ${Math.log(bpe.vocab.size).toFixed(4)})`);
  printSamples('after pretraining', model, tokenizer, samplePrompts, [endOfText, imEnd]);

  // 5. Model folder: weights in float16, configs, tokenizer.
  writeSafetensors(path.join(staging, 'model.safetensors'), toFloat16(checkpointTensors(model)), { format: 'pt' });
  writeJson(path.join(staging, 'config.json'), config);
  writeJson(path.join(staging, 'generation_config.json'), { bos_token_id: endOfText, eos_token_id: [endOfText, imEnd], pad_token_id: endOfText });
  writeJson(path.join(staging, 'pretraining_log.json'), {
    seed: SEED,
    corpus: { ...CORPUS, documents: corpus.documents.length, characters: corpusCharacters, tokens: tokenCount },
    training: { ...TRAINING, steps: args.steps, trainChunks: train.length, validationChunks: validation.length },
    validationLoss: { before: round(initialValidation), after: round(finalValidation) },
    lossCurve: curve,
  });
  fs.rmSync(modelDir, { recursive: true, force: true });
  fs.renameSync(staging, modelDir);
  model.dispose();

  // 6. Sample fine-tuning dataset.
  writeDataset(dataDir);
  print(`wrote ${modelDir} and ${dataDir}`);
}

/** ChatML rendering of a conversation, the same text as the tokenizer's chat template. */
function renderChatML(messages: ChatMessage[]): string {
  return messages.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join('');
}

function checkRoundTrip(tokenizer: Tokenizer, texts: string[]): void {
  for (const [index, text] of texts.entries()) {
    const decoded = tokenizer.decode(tokenizer.encode(text, { addSpecialTokens: false }));
    if (decoded !== text) {
      throw new Error(`Tokenizer round trip failed on sample ${index}: ${JSON.stringify(text.slice(0, 80))} decoded as ${JSON.stringify(decoded.slice(0, 80))}.`);
    }
  }
}

/**
 * Tokenizes documents and chats in a seeded shuffled order, each followed by `<|endoftext|>`,
 * into one stream, and cuts it into chunks of `sequenceLength` tokens. Chunks cross document
 * boundaries (packing), as in most pretraining.
 */
function tokenChunks(documents: string[], chats: ChatMessage[][], tokenizer: Tokenizer): { train: number[][]; validation: number[][]; tokenCount: number } {
  const endOfText = tokenizer.tokenToId('<|endoftext|>')!;
  const texts = [...documents, ...chats.map((chat) => tokenizer.applyChatTemplate(chat))];
  const order = new SeededRandom(deriveSeed(SEED, 2)).shuffle(texts.map((_, i) => i));
  const stream: number[] = [];
  for (const index of order) stream.push(...tokenizer.encode(texts[index], { addSpecialTokens: false }), endOfText);

  const chunks: number[][] = [];
  for (let start = 0; start + TRAINING.sequenceLength <= stream.length; start += TRAINING.sequenceLength) {
    chunks.push(stream.slice(start, start + TRAINING.sequenceLength));
  }
  const shuffled = new SeededRandom(deriveSeed(SEED, 3)).shuffle(chunks);
  const validationCount = Math.max(8, Math.round(shuffled.length * TRAINING.validationFraction));
  return { train: shuffled.slice(validationCount), validation: shuffled.slice(0, validationCount), tokenCount: stream.length };
}

interface CurvePoint {
  step: number;
  loss: number;
  learningRate: number;
}

/**
 * Full-parameter AdamW over shuffled chunks, epoch after epoch: linear warmup, then cosine decay
 * to `finalRateFraction` of the peak. Returns the mean training loss of every `logEvery` steps.
 */
function pretrain(model: CausalLM, chunks: number[][], steps: number): CurvePoint[] {
  const { decayed, notDecayed } = parameterGroups(model);
  const variables = [...decayed, ...notDecayed];
  const adamOptions = { beta1: 0.9, beta2: 0.95, epsilon: 1e-8 };
  const withDecay = new AdamW({ ...adamOptions, weightDecay: TRAINING.weightDecay });
  const withoutDecay = new AdamW({ ...adamOptions, weightDecay: 0 });

  const random = new SeededRandom(deriveSeed(SEED, 4));
  let order: number[] = [];
  const curve: CurvePoint[] = [];
  let windowLoss = 0;
  const started = performance.now();

  for (let step = 0; step < steps; step++) {
    const inputIds: number[][] = [];
    for (let b = 0; b < TRAINING.batchSize; b++) {
      if (order.length === 0) order = random.shuffle(chunks.map((_, i) => i));
      inputIds.push(chunks[order.pop()!]);
    }
    const learningRate = scheduledRate(step, steps);

    const { value, grads } = tf.variableGrads(() => batchLoss(model, { inputIds, labels: inputIds }), variables);
    const loss = value.dataSync()[0];
    value.dispose();
    if (!Number.isFinite(loss)) throw new Error(`Pretraining loss became ${loss} at step ${step + 1}; lower TRAINING.learningRate.`);
    const gradients = new Map(Object.entries(grads));
    clipGlobalNorm(gradients, TRAINING.maxGradNorm);
    withDecay.apply(decayed, gradients, learningRate);
    withoutDecay.apply(notDecayed, gradients, learningRate);
    for (const gradient of gradients.values()) gradient.dispose();

    windowLoss += loss;
    if ((step + 1) % TRAINING.logEvery === 0 || step + 1 === steps) {
      const count = (step % TRAINING.logEvery) + 1;
      curve.push({ step: step + 1, loss: round(windowLoss / count), learningRate: Number(learningRate.toExponential(4)) });
      const seconds = (performance.now() - started) / 1000;
      print(`step ${step + 1}/${steps}  loss ${(windowLoss / count).toFixed(4)}  lr ${learningRate.toExponential(2)}  ${(seconds / (step + 1)).toFixed(2)} s/step  ${seconds.toFixed(0)} s`);
      windowLoss = 0;
    }
  }
  withDecay.dispose();
  withoutDecay.dispose();
  return curve;
}

function scheduledRate(step: number, steps: number): number {
  const peak = TRAINING.learningRate;
  const floor = peak * TRAINING.finalRateFraction;
  if (step < TRAINING.warmupSteps) return learningRateAt(step, peak, 'constant', TRAINING.warmupSteps, steps);
  return floor + learningRateAt(step, peak - floor, 'cosine', TRAINING.warmupSteps, steps);
}

/** Mean loss over the validation chunks. */
function validationLoss(model: CausalLM, chunks: number[][]): number {
  let sum = 0;
  for (let start = 0; start < chunks.length; start += TRAINING.batchSize) {
    const inputIds = chunks.slice(start, start + TRAINING.batchSize);
    const loss = tf.tidy(() => batchLoss(model, { inputIds, labels: inputIds }));
    sum += loss.dataSync()[0] * inputIds.length;
    loss.dispose();
  }
  return sum / chunks.length;
}

function sampleInputs(tokenizer: Tokenizer): { label: string; ids: number[] }[] {
  const texts = ['Mira the baker', 'One day, Tobin walked', '"Where are you going?" asked'];
  const chats = ['Where does Ada live?', 'Who is Finn\'s best friend?'];
  return [
    ...texts.map((text) => ({ label: text, ids: tokenizer.encode(text, { addSpecialTokens: false }) })),
    ...chats.map((question) => ({
      label: `chat: ${question}`,
      ids: tokenizer.encode(tokenizer.applyChatTemplate([{ role: 'user', content: question }], { addGenerationPrompt: true }), { addSpecialTokens: false }),
    })),
  ];
}

function printSamples(title: string, model: CausalLM, tokenizer: Tokenizer, prompts: { label: string; ids: number[] }[], stopIds: number[]): void {
  print(`samples ${title} (greedy):`);
  for (const prompt of prompts) {
    const generated = greedyGenerate(model, prompt.ids, 40, stopIds);
    print(`  ${prompt.label} → ${JSON.stringify(tokenizer.decode(generated))}`);
  }
}

function writeDataset(dataDir: string): void {
  fs.rmSync(dataDir, { recursive: true, force: true });
  fs.mkdirSync(dataDir, { recursive: true });
  for (const [name, text] of Object.entries(datasetFiles())) fs.writeFileSync(path.join(dataDir, name), text);
}

/** Float16 copies of float32 tensors (the loader widens them back to float32). */
function toFloat16<T extends { dtype: string }>(tensors: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(tensors).map(([name, tensor]) => [name, { ...tensor, dtype: 'F16' }]));
}

function parseArguments(argv: string[]): Arguments {
  const args: Arguments = { outDir: path.resolve('resources'), steps: TRAINING.steps };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    if (argv[i] === '--out' && value) {
      args.outDir = path.resolve(value);
      i++;
    } else if (argv[i] === '--steps' && value && /^\d+$/.test(value)) {
      args.steps = Number(value);
      i++;
    } else {
      throw new Error(`Invalid argument ${JSON.stringify(argv[i])}. Usage: build.mjs [--steps N] [--out DIR]`);
    }
  }
  return args;
}

function writeJson(file: string, value: unknown, pretty = true): void {
  fs.writeFileSync(file, (pretty ? JSON.stringify(value, null, 2) : JSON.stringify(value)) + '\n');
}

function round(value: number): number {
  return Math.round(value * 1e4) / 1e4;
}

function print(line: string): void {
  process.stdout.write(line + '\n');
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
