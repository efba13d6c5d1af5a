/**
 * Normalized records → training examples `{input_ids, labels}`, with the loss on completion and
 * assistant tokens only (labels -100 elsewhere), truncation, packing and a seeded
 * train/validation split.
 */
import { StudioError } from '../../shared/errors';
import type { ChatMessage, Tokenizer } from '../tokenizer';
import { IGNORE_INDEX } from './normalize';
import type { NormalizedRecord } from './normalize';
import { mulberry32, shuffleInPlace } from './random';
import type { SkipReason } from './report';

export { mulberry32, shuffleInPlace } from './random';
export { IGNORE_INDEX } from './normalize';

export interface TrainingExample {
  input_ids: number[];
  /** Target per position: the token id, or -100 where no loss is taken. Same length as input_ids. */
  labels: number[];
}

export interface EncodeOptions {
  /** Examples longer than this are cut at the end and counted as truncated. Default: no limit. */
  maxSeqLength?: number;
  /** Also takes the loss on prompt, system and user tokens. Default false. */
  trainOnPrompt?: boolean;
  /**
   * Number of token ids the model's embedding contains (config.json `vocab_size`). Records with an
   * input id or label outside it fail. Default: the tokenizer's vocabulary size, when there is one.
   */
  vocabSize?: number;
}

export type EncodeResult =
  | {
      ok: true;
      example: TrainingExample;
      /** Length in tokens before truncation. */
      length: number;
      truncated: boolean;
    }
  | { ok: false; reason: SkipReason; message: string };

/**
 * Encodes one normalized record.
 *
 * - `text`: the model's special tokens around the text (BOS where it uses one), then EOS; loss on
 *   every text token and the EOS.
 * - `prompt_completion`: special prefix + prompt, then completion + EOS; loss on the completion
 *   and EOS only unless `trainOnPrompt`.
 * - `chat`: rendered with the chat template (see `renderChatWithSpans`); loss on the assistant
 *   spans only unless `trainOnPrompt`. EOS is appended, labelled, unless the last assistant span
 *   already ends with it.
 * - `tokens`: see `examplesFromTokens`.
 *
 * A record that cannot be encoded (template error, no target token left after truncation, id
 * outside the vocabulary) is returned as a failure, not thrown.
 *
 * @throws StudioError TOKENIZER_MISSING for a text record when no tokenizer is given.
 */
export function encodeRecord(record: NormalizedRecord, tokenizer: Tokenizer | undefined, options: EncodeOptions = {}): EncodeResult {
  const vocabSize = options.vocabSize ?? tokenizer?.vocabSize;
  if (record.kind === 'tokens') return examplesFromTokens(record, { maxSeqLength: options.maxSeqLength, vocabSize });
  if (!tokenizer) {
    throw new StudioError(
      'TOKENIZER_MISSING',
      `This dataset holds ${record.kind === 'chat' ? 'chat' : 'text'} records, which need the model's tokenizer, and the model folder has none.`,
      'Add tokenizer.json and tokenizer_config.json to the model folder, or import pre-tokenized data (rows with input_ids).',
    );
  }

  let example: TrainingExample;
  switch (record.kind) {
    case 'text':
      example = encodeText(record.text, tokenizer);
      break;
    case 'prompt_completion':
      example = encodePromptCompletion(record.prompt, record.completion, tokenizer, options.trainOnPrompt ?? false);
      break;
    case 'chat': {
      const result = encodeChat(record.messages, tokenizer, options.trainOnPrompt ?? false);
      if (!result.ok) return result;
      example = result.example;
      break;
    }
  }
  if (options.vocabSize !== undefined) {
    const outside = outsideVocabulary(example, options.vocabSize);
    if (outside) return outside;
  }
  return truncate(example, options.maxSeqLength);
}

/**
 * Turns a pre-tokenized record into an example. Without `labels`, every token is a target. With
 * `vocabSize`, input ids and labels (other than -100) outside the vocabulary fail the record.
 */
export function examplesFromTokens(
  record: { input_ids: number[]; labels?: number[] },
  options: { maxSeqLength?: number; vocabSize?: number } = {},
): EncodeResult {
  if (options.vocabSize !== undefined) {
    const outside = outsideVocabulary(record, options.vocabSize);
    if (outside) return outside;
  }
  const example = { input_ids: [...record.input_ids], labels: [...(record.labels ?? record.input_ids)] };
  return truncate(example, options.maxSeqLength);
}

/** Returns the first input id or label outside [0, vocabSize) as a failed record, or undefined. */
function outsideVocabulary(record: { input_ids: readonly number[]; labels?: readonly number[] }, vocabSize: number): EncodeResult | undefined {
  const idIndex = record.input_ids.findIndex((id) => id < 0 || id >= vocabSize);
  if (idIndex >= 0) {
    return {
      ok: false,
      reason: 'wrong_type',
      message: `input_ids[${idIndex}] is ${record.input_ids[idIndex]}, outside the model's vocabulary of ${vocabSize} tokens`,
    };
  }
  const labels = record.labels ?? [];
  const labelIndex = labels.findIndex((label) => label !== IGNORE_INDEX && (label < 0 || label >= vocabSize));
  if (labelIndex >= 0) {
    return {
      ok: false,
      reason: 'wrong_type',
      message: `labels[${labelIndex}] is ${labels[labelIndex]}, outside the model's vocabulary of ${vocabSize} tokens (use -100 for positions without a loss)`,
    };
  }
  return undefined;
}

function encodeText(text: string, tokenizer: Tokenizer): TrainingExample {
  const prefix = [...tokenizer.prefixTokenIds];
  const body = [...tokenizer.encode(text, { addSpecialTokens: false }), ...tokenizer.suffixTokenIds];
  appendEos(body, tokenizer);
  return { input_ids: [...prefix, ...body], labels: [...masked(prefix), ...body] };
}

function encodePromptCompletion(prompt: string, completion: string, tokenizer: Tokenizer, trainOnPrompt: boolean): TrainingExample {
  const prefix = [...tokenizer.prefixTokenIds];
  const promptIds = tokenizer.encode(prompt, { addSpecialTokens: false });
  const completionIds = [...tokenizer.encode(completion, { addSpecialTokens: false }), ...tokenizer.suffixTokenIds];
  appendEos(completionIds, tokenizer);
  return {
    input_ids: [...prefix, ...promptIds, ...completionIds],
    labels: [...masked(prefix), ...(trainOnPrompt ? promptIds : masked(promptIds)), ...completionIds],
  };
}

function encodeChat(
  messages: readonly ChatMessage[],
  tokenizer: Tokenizer,
  trainOnPrompt: boolean,
): { ok: true; example: TrainingExample } | { ok: false; reason: SkipReason; message: string } {
  let rendered: RenderedChat;
  try {
    rendered = renderChatWithSpans(messages, tokenizer);
  } catch (error) {
    return { ok: false, reason: 'template_error', message: (error as Error).message };
  }

  // Each segment is tokenized on its own, so every token falls wholly inside or outside an
  // assistant span. Chat templates write the special tokens themselves, so none are added.
  const inputIds: number[] = [];
  const labels: number[] = [];
  let cursor = 0;
  let lastSpanIds: number[] = [];
  for (const [start, end] of rendered.spans) {
    const before = tokenizer.encode(rendered.text.slice(cursor, start), { addSpecialTokens: false });
    const span = tokenizer.encode(rendered.text.slice(start, end), { addSpecialTokens: false });
    inputIds.push(...before, ...span);
    labels.push(...(trainOnPrompt ? before : masked(before)), ...span);
    lastSpanIds = span;
    cursor = end;
  }
  const after = tokenizer.encode(rendered.text.slice(cursor), { addSpecialTokens: false });
  inputIds.push(...after);
  labels.push(...(trainOnPrompt ? after : masked(after)));

  if (tokenizer.eosTokenId !== undefined && !lastSpanIds.includes(tokenizer.eosTokenId)) {
    inputIds.push(tokenizer.eosTokenId);
    labels.push(tokenizer.eosTokenId);
  }
  return { ok: true, example: { input_ids: inputIds, labels } };
}

export interface RenderedChat {
  /** The conversation as the chat template renders it. */
  text: string;
  /** [start, end) character offsets in `text` of each assistant turn, in order. */
  spans: [number, number][];
}

/**
 * Renders a conversation and finds the characters each assistant turn produced.
 *
 * For assistant message i, the start is the length of the template's rendering of messages
 * before i with the generation prompt, which must be a prefix of the full rendering. The end is
 * the length of the rendering of messages up to and including i when that is a prefix too, so
 * the span covers the end-of-turn marker. Some templates render the last assistant turn
 * differently (Qwen3 adds an empty `<think>` block to it). There the end is found by searching
 * for the message content after the start. The span then extends over a special token that
 * follows the content, possibly after whitespace (`<|im_end|>`, `<|eot_id|>`, ` </s>`).
 *
 * @throws StudioError INVALID_ARGUMENT when the template fails or an assistant turn cannot be located.
 */
export function renderChatWithSpans(messages: readonly ChatMessage[], tokenizer: Tokenizer): RenderedChat {
  const text = tokenizer.applyChatTemplate(messages);
  const spans: [number, number][] = [];
  let previousEnd = 0;

  for (const [index, message] of messages.entries()) {
    if (message.role !== 'assistant') continue;

    const prefix = index === 0 ? '' : tokenizer.applyChatTemplate(messages.slice(0, index), { addGenerationPrompt: true });
    if (!text.startsWith(prefix) || prefix.length < previousEnd) {
      throw new StudioError(
        'INVALID_ARGUMENT',
        `The chat template renders the conversation before assistant message ${index} differently from the whole conversation, so the assistant tokens cannot be located.`,
        'Use a chat template whose rendering of a conversation starts with the rendering of its first turns, or set trainOnPrompt.',
      );
    }
    const start = prefix.length;
    const end = findAssistantEnd(text, start, messages, index, tokenizer);
    spans.push([start, end]);
    previousEnd = end;
  }
  return { text, spans };
}

function findAssistantEnd(text: string, start: number, messages: readonly ChatMessage[], index: number, tokenizer: Tokenizer): number {
  const through = tokenizer.applyChatTemplate(messages.slice(0, index + 1));
  if (through.length > start && text.startsWith(through)) return through.length;

  const content = messages[index].content;
  let found = text.indexOf(content, start);
  let length = content.length;
  if (found < 0 || content.length === 0) {
    const trimmed = content.trim();
    found = trimmed ? text.indexOf(trimmed, start) : -1;
    length = trimmed.length;
  }
  if (found < 0) {
    throw new StudioError(
      'INVALID_ARGUMENT',
      `The chat template changes the text of assistant message ${index}, so its tokens cannot be located.`,
      'Use a chat template that writes assistant content unchanged, or set trainOnPrompt.',
    );
  }

  let end = found + length;
  let next = end;
  while (next < text.length && /\s/.test(text[next])) next += 1;
  const marker = tokenizer.specialTokens.find((token) => token.length > 0 && text.startsWith(token, next));
  if (marker) end = next + marker.length;
  return end;
}

function appendEos(ids: number[], tokenizer: Tokenizer): void {
  const eos = tokenizer.eosTokenId;
  if (eos !== undefined && ids[ids.length - 1] !== eos) ids.push(eos);
}

function masked(ids: readonly number[]): number[] {
  return new Array<number>(ids.length).fill(IGNORE_INDEX);
}

function truncate(example: TrainingExample, maxSeqLength: number | undefined): EncodeResult {
  const length = example.input_ids.length;
  if (maxSeqLength === undefined || length <= maxSeqLength) return { ok: true, example, length, truncated: false };

  const cut = { input_ids: example.input_ids.slice(0, maxSeqLength), labels: example.labels.slice(0, maxSeqLength) };
  if (!cut.labels.some((label) => label !== IGNORE_INDEX)) {
    return {
      ok: false,
      reason: 'too_long',
      message: `the example is ${length} tokens and its first ${maxSeqLength} (maxSeqLength) hold no target tokens`,
    };
  }
  return { ok: true, example: cut, length, truncated: true };
}

// ---------------------------------------------------------------------------------------------
// Packing

export interface PackedExample extends TrainingExample {
  /** Offset where each packed example starts. */
  boundaries: number[];
}

/**
 * Packs examples, in order, into sequences of at most `maxSeqLength` tokens: an example joins
 * the current sequence when it fits, else starts the next one. No example is split.
 *
 * The label at each example's first position becomes -100, so no loss crosses from one example
 * into the next. That label is never a target in an unpacked example either, because the
 * next-token shift drops position 0.
 * NOTE: a plain causal mask lets attention cross the boundaries inside a sequence; `boundaries`
 * records them for a trainer that builds a block-diagonal mask.
 *
 * @throws StudioError INVALID_ARGUMENT when an example is longer than `maxSeqLength`.
 */
export function packExamples(examples: Iterable<TrainingExample>, maxSeqLength: number): PackedExample[] {
  if (!Number.isInteger(maxSeqLength) || maxSeqLength < 1) {
    throw new StudioError('INVALID_ARGUMENT', `maxSeqLength must be a positive integer. Received: ${maxSeqLength}`);
  }
  const packed: PackedExample[] = [];
  let current: PackedExample = { input_ids: [], labels: [], boundaries: [] };

  for (const [index, example] of [...examples].entries()) {
    const length = example.input_ids.length;
    if (length > maxSeqLength) {
      throw new StudioError(
        'INVALID_ARGUMENT',
        `Example ${index} has ${length} tokens, more than maxSeqLength ${maxSeqLength}.`,
        'Truncate examples (encodeRecord with maxSeqLength) before packing.',
      );
    }
    if (length === 0) continue;
    if (current.input_ids.length + length > maxSeqLength) {
      packed.push(current);
      current = { input_ids: [], labels: [], boundaries: [] };
    }
    current.boundaries.push(current.input_ids.length);
    current.input_ids.push(...example.input_ids);
    current.labels.push(IGNORE_INDEX, ...example.labels.slice(1));
  }
  if (current.input_ids.length > 0) packed.push(current);
  return packed;
}

// ---------------------------------------------------------------------------------------------
// Train / validation split

/**
 * Splits items into train and validation sets: a mulberry32(seed) shuffle picks
 * round(n × validationRatio) items for validation (at least one when the ratio is above 0 and
 * there are two or more items). Both sets keep the original order. The same seed always gives
 * the same split.
 *
 * @throws StudioError INVALID_ARGUMENT when the ratio is outside [0, 1).
 */
export function splitTrainValidation<T>(items: readonly T[], validationRatio: number, seed: number): { train: T[]; validation: T[] } {
  if (!(validationRatio >= 0 && validationRatio < 1)) {
    throw new StudioError('INVALID_ARGUMENT', `validationRatio must be in [0, 1). Received: ${validationRatio}`);
  }
  let count = Math.round(items.length * validationRatio);
  if (validationRatio > 0 && items.length >= 2) count = Math.min(items.length - 1, Math.max(1, count));

  const order = shuffleInPlace(
    items.map((_, i) => i),
    mulberry32(seed),
  );
  const inValidation = new Set(order.slice(0, count));
  const train: T[] = [];
  const validation: T[] = [];
  items.forEach((item, i) => (inValidation.has(i) ? validation : train).push(item));
  return { train, validation };
}
