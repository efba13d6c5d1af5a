/**
 * Row → normalized record. Every schema maps to one of four record kinds, which is all the
 * encoder and the trainer ever see.
 */
import type { ChatMessage } from '../tokenizer';
import type { SkipReason } from './report';
import type { DatasetSchema } from './schema';

export type NormalizedRecord =
  | { kind: 'text'; text: string }
  | { kind: 'prompt_completion'; prompt: string; completion: string }
  | { kind: 'chat'; messages: ChatMessage[] }
  | { kind: 'tokens'; input_ids: number[]; labels?: number[] };

export type NormalizeResult = { ok: true; record: NormalizedRecord } | { ok: false; reason: SkipReason; message: string };

/**
 * Alpaca prompt templates, as published with Stanford Alpaca (tatsu-lab/stanford_alpaca,
 * `train.py`, PROMPT_DICT). The completion is the row's `output`.
 */
export const ALPACA_PROMPT_WITH_INPUT =
  'Below is an instruction that describes a task, paired with an input that provides further context. ' +
  'Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n';
export const ALPACA_PROMPT_NO_INPUT =
  'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Response:\n';

/** ShareGPT `from` values and the chat roles they become. */
export const SHAREGPT_ROLES: Readonly<Record<string, string>> = {
  human: 'user',
  user: 'user',
  gpt: 'assistant',
  assistant: 'assistant',
  system: 'system',
  function_call: 'assistant',
  observation: 'tool',
  tool: 'tool',
};

const CHAT_ROLES = new Set(['system', 'user', 'assistant', 'tool']);
const ROLE_ALIASES: Readonly<Record<string, string>> = { developer: 'system', function: 'tool' };

/** Label value that excludes a position from the loss, as in PyTorch's CrossEntropyLoss. */
export const IGNORE_INDEX = -100;

type Row = Record<string, unknown>;

class RowError extends Error {
  constructor(
    readonly reason: SkipReason,
    message: string,
  ) {
    super(message);
  }
}

/** Normalizes one row read under `schema`; a row that does not fit is returned as a failure. */
export function normalizeRow(value: unknown, schema: DatasetSchema): NormalizeResult {
  try {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new RowError('wrong_type', `the row is ${typeName(value)}, expected an object`);
    }
    return { ok: true, record: normalizers[schema](value as Row) };
  } catch (error) {
    if (error instanceof RowError) return { ok: false, reason: error.reason, message: error.message };
    throw error;
  }
}

const normalizers: Record<DatasetSchema, (row: Row) => NormalizedRecord> = {
  text: normalizeText,
  prompt_completion: normalizePromptCompletion,
  alpaca: normalizeAlpaca,
  messages: normalizeOpenAiMessages,
  sharegpt: normalizeShareGpt,
  tokens: normalizeTokens,
};

function normalizeText(row: Row): NormalizedRecord {
  const text = requireString(row, 'text');
  if (text.trim() === '') throw new RowError('empty_text', 'field "text" is empty');
  return { kind: 'text', text };
}

/**
 * `prompt` + `completion` (or `response`). A `system` or `system_prompt` string is put before the
 * prompt, separated by a blank line, so it is not lost.
 */
function normalizePromptCompletion(row: Row): NormalizedRecord {
  const prompt = requireString(row, 'prompt');
  if (row.completion == null && row.response == null) throw new RowError('missing_field', 'missing field "completion"');
  const completionField = row.completion != null ? 'completion' : 'response';
  const completion = requireString(row, completionField);
  if (completion.trim() === '') throw new RowError('empty_text', `field "${completionField}" is empty`);

  let system = '';
  if (row.system != null) system = requireString(row, 'system');
  else if (row.system_prompt != null) system = requireString(row, 'system_prompt');
  return { kind: 'prompt_completion', prompt: system.trim() ? `${system}\n\n${prompt}` : prompt, completion };
}

function normalizeAlpaca(row: Row): NormalizedRecord {
  const instruction = requireString(row, 'instruction');
  const input = row.input == null ? '' : requireString(row, 'input');
  const output = requireString(row, 'output');
  if (instruction.trim() === '') throw new RowError('empty_text', 'field "instruction" is empty');
  if (output.trim() === '') throw new RowError('empty_text', 'field "output" is empty');

  const template = input.trim() ? ALPACA_PROMPT_WITH_INPUT : ALPACA_PROMPT_NO_INPUT;
  const prompt = template.replace('{instruction}', () => instruction).replace('{input}', () => input);
  return { kind: 'prompt_completion', prompt, completion: output };
}

/**
 * OpenAI chat rows. An assistant turn with `tool_calls` keeps its calls as text after any
 * content, one `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>` block per call, so
 * the model learns to emit the call. This is the layout of the Hermes function-calling format,
 * which Qwen2.5 and Qwen3 chat templates also use. `content` given as a list of parts keeps its
 * text parts.
 * NOTE: the row's `tools` definitions are not kept, so the template never sees them.
 */
function normalizeOpenAiMessages(row: Row): NormalizedRecord {
  const list = requireArray(row, 'messages');
  const messages = list.map((item, index) => {
    const where = `messages[${index}]`;
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      throw new RowError('wrong_type', `${where} is ${typeName(item)}, expected an object`);
    }
    const message = item as Row;
    const role = chatRole(message.role, `${where}.role`);
    const content = messageContent(message, role, where);
    return { role, content };
  });
  return checkConversation(messages, 'messages');
}

function normalizeShareGpt(row: Row): NormalizedRecord {
  const list = requireArray(row, 'conversations');
  const messages = list.map((item, index) => {
    const where = `conversations[${index}]`;
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      throw new RowError('wrong_type', `${where} is ${typeName(item)}, expected an object`);
    }
    const turn = item as Row;
    if (typeof turn.from !== 'string') {
      throw new RowError(turn.from == null ? 'missing_field' : 'wrong_type', `${where}.from is ${typeName(turn.from)}, expected a string`);
    }
    const role = SHAREGPT_ROLES[turn.from];
    if (!role) {
      throw new RowError('wrong_type', `${where}.from is "${turn.from}", expected one of ${Object.keys(SHAREGPT_ROLES).join(', ')}`);
    }
    if (typeof turn.value !== 'string') {
      throw new RowError(turn.value == null ? 'missing_field' : 'wrong_type', `${where}.value is ${typeName(turn.value)}, expected a string`);
    }
    return { role, content: turn.value };
  });
  return checkConversation(messages, 'conversations');
}

function checkConversation(messages: ChatMessage[], field: string): NormalizedRecord {
  if (messages.length === 0) throw new RowError('empty_text', `field "${field}" is an empty list`);
  if (!messages.some((message) => message.role === 'assistant' && message.content.trim() !== '')) {
    throw new RowError('missing_field', `field "${field}" has no assistant turn with content, so there is nothing to learn`);
  }
  return { kind: 'chat', messages };
}

function chatRole(value: unknown, where: string): string {
  if (typeof value !== 'string') {
    throw new RowError(value == null ? 'missing_field' : 'wrong_type', `${where} is ${typeName(value)}, expected a string`);
  }
  const role = ROLE_ALIASES[value] ?? value;
  if (!CHAT_ROLES.has(role)) {
    throw new RowError('wrong_type', `${where} is "${value}", expected one of system, user, assistant, tool`);
  }
  return role;
}

function messageContent(message: Row, role: string, where: string): string {
  let content: string;
  const value = message.content;
  if (typeof value === 'string') {
    content = value;
  } else if (Array.isArray(value)) {
    content = value.map((part, index) => textPart(part, `${where}.content[${index}]`)).join('');
  } else if (value == null && role === 'assistant' && Array.isArray(message.tool_calls)) {
    content = '';
  } else {
    throw new RowError(value == null ? 'missing_field' : 'wrong_type', `${where}.content is ${typeName(value)}, expected a string`);
  }

  if (role === 'assistant' && Array.isArray(message.tool_calls) && message.tool_calls.length > 0) {
    const calls = message.tool_calls.map((call, index) => serializeToolCall(call, `${where}.tool_calls[${index}]`));
    content = [content, ...calls].filter((piece) => piece !== '').join('\n');
  }
  return content;
}

function textPart(part: unknown, where: string): string {
  if (typeof part === 'string') return part;
  if (typeof part === 'object' && part !== null && typeof (part as Row).text === 'string') return (part as Row).text as string;
  const type = typeof part === 'object' && part !== null ? String((part as Row).type ?? 'unknown') : typeName(part);
  throw new RowError('wrong_type', `${where} is a "${type}" part; only text parts can be trained on`);
}

function serializeToolCall(call: unknown, where: string): string {
  const item = (typeof call === 'object' && call !== null ? call : {}) as Row;
  const fn = (typeof item.function === 'object' && item.function !== null ? item.function : item) as Row;
  if (typeof fn.name !== 'string') {
    throw new RowError('missing_field', `${where} has no function name`);
  }
  let args: unknown = fn.arguments ?? {};
  if (typeof args === 'string') {
    try {
      args = JSON.parse(args);
    } catch {
      // Arguments that are not JSON stay as the string they are.
    }
  }
  return `<tool_call>\n${JSON.stringify({ name: fn.name, arguments: args })}\n</tool_call>`;
}

/**
 * Pre-tokenized rows. `labels` and `attention_mask`, when present, must match `input_ids` in
 * length; positions where `attention_mask` is 0 (padding) are dropped.
 */
function normalizeTokens(row: Row): NormalizedRecord {
  let inputIds = requireIntegers(row, 'input_ids', 0);
  if (inputIds.length === 0) throw new RowError('empty_text', 'field "input_ids" is an empty list');
  let labels = row.labels == null ? undefined : requireIntegers(row, 'labels', IGNORE_INDEX);
  if (labels && labels.length !== inputIds.length) {
    throw new RowError('wrong_type', `field "labels" has ${labels.length} values but "input_ids" has ${inputIds.length}`);
  }
  if (labels) {
    const bad = labels.find((label) => label < 0 && label !== IGNORE_INDEX);
    if (bad !== undefined) throw new RowError('wrong_type', `field "labels" contains ${bad}; labels are token ids or ${IGNORE_INDEX}`);
  }

  if (row.attention_mask != null) {
    const mask = requireIntegers(row, 'attention_mask', 0);
    if (mask.length !== inputIds.length) {
      throw new RowError('wrong_type', `field "attention_mask" has ${mask.length} values but "input_ids" has ${inputIds.length}`);
    }
    const keep = (_: number, i: number) => mask[i] !== 0;
    inputIds = inputIds.filter(keep);
    labels = labels?.filter(keep);
    if (inputIds.length === 0) throw new RowError('empty_text', 'field "attention_mask" masks every position');
  }
  return labels ? { kind: 'tokens', input_ids: inputIds, labels } : { kind: 'tokens', input_ids: inputIds };
}

function requireString(row: Row, field: string): string {
  const value = row[field];
  if (value == null) throw new RowError('missing_field', `missing field "${field}"`);
  if (typeof value !== 'string') throw new RowError('wrong_type', `field "${field}" is ${typeName(value)}, expected a string`);
  return value;
}

function requireArray(row: Row, field: string): unknown[] {
  const value = row[field];
  if (value == null) throw new RowError('missing_field', `missing field "${field}"`);
  if (!Array.isArray(value)) throw new RowError('wrong_type', `field "${field}" is ${typeName(value)}, expected a list`);
  return value;
}

function requireIntegers(row: Row, field: string, min: number): number[] {
  const values = requireArray(row, field);
  for (const [index, value] of values.entries()) {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
      const shown = typeof value === 'number' ? String(value) : typeName(value);
      throw new RowError('wrong_type', `${field}[${index}] is ${shown}, expected an integer >= ${min}`);
    }
  }
  return values as number[];
}

/** Names a JSON value's type for messages: "a number", "null", "a list", ... */
function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'missing';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value}`;
}
