/**
 * Tokenizer for a Hugging Face model folder: `tokenizer.json` through `@huggingface/tokenizers`,
 * special tokens from `tokenizer_config.json` (and `special_tokens_map.json`,
 * `generation_config.json`), and chat templates rendered with `@huggingface/jinja`.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { Template } from '@huggingface/jinja';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

import { StudioError } from '../../shared/errors';

/** One chat turn as chat templates receive it. */
export interface ChatMessage {
  role: string;
  content: string;
}

export interface EncodeOptions {
  /**
   * Adds the tokens the model expects around a sequence: those of the `tokenizer.json`
   * post-processor, overridden by `add_bos_token` / `add_eos_token` in `tokenizer_config.json`.
   * Default true.
   */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drops special tokens (BOS, EOS, chat markers) from the output. Default false. */
  skipSpecialTokens?: boolean;
}

export interface ChatTemplateOptions {
  /** Appends the marker that opens an assistant turn, as for generation. Default false. */
  addGenerationPrompt?: boolean;
}

export interface Tokenizer {
  encode(text: string, options?: EncodeOptions): number[];
  decode(ids: readonly number[], options?: DecodeOptions): string;
  /** Id of a token string, or undefined when it is not in the vocabulary. */
  tokenToId(token: string): number | undefined;
  bosTokenId?: number;
  eosTokenId?: number;
  /** Padding id: `pad_token`, else the EOS id. */
  padTokenId?: number;
  /** Largest token id + 1, added tokens included. */
  vocabSize: number;
  /** Token ids `encode` puts before the text when `addSpecialTokens` is true. */
  prefixTokenIds: readonly number[];
  /** Token ids `encode` puts after the text when `addSpecialTokens` is true. */
  suffixTokenIds: readonly number[];
  /** Contents of every special token (BOS, EOS, PAD, chat markers). */
  specialTokens: readonly string[];
  /** The model's own chat template; undefined when the folder has none. */
  chatTemplate?: string;
  /** Renders messages with `chatTemplate`, or with FALLBACK_CHAT_TEMPLATE when there is none. */
  applyChatTemplate(messages: readonly ChatMessage[], options?: ChatTemplateOptions): string;
}

/**
 * Chat template for models that ship none: ChatML, the format of Qwen and SmolLM2 instruct
 * models, `<|im_start|>{role}\n{content}<|im_end|>\n` per message, with `<|im_start|>assistant\n`
 * as the generation prompt. On a tokenizer without ChatML tokens (GPT-2), the markers are
 * tokenized as plain text.
 */
export const FALLBACK_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

type JsonObject = Record<string, unknown>;

/** Files a model folder may hold besides `tokenizer.json`; each is optional. */
export interface TokenizerFiles {
  tokenizerJson: JsonObject;
  tokenizerConfig: JsonObject;
  specialTokensMap?: JsonObject;
  generationConfig?: JsonObject;
  /** Contents of `chat_template.jinja`, which newer transformers versions write. */
  chatTemplateFile?: string;
}

/**
 * Loads the tokenizer of a Hugging Face model folder.
 *
 * @throws StudioError TOKENIZER_MISSING when the folder has no `tokenizer.json`;
 *   MODEL_FORMAT when a tokenizer file is not valid JSON or the tokenizer cannot be built.
 */
export async function loadTokenizer(modelDir: string): Promise<Tokenizer> {
  const tokenizerPath = path.join(modelDir, 'tokenizer.json');
  const tokenizerText = await readOptionalText(tokenizerPath);
  if (tokenizerText === undefined) {
    throw new StudioError(
      'TOKENIZER_MISSING',
      `No tokenizer.json in ${modelDir}.`,
      'Add the tokenizer files (tokenizer.json, tokenizer_config.json) from the model repository to this folder. ' +
        'Pre-tokenized data (rows with input_ids) trains without a tokenizer.',
    );
  }

  const files: TokenizerFiles = {
    tokenizerJson: parseJsonFile(tokenizerPath, tokenizerText),
    tokenizerConfig: (await readOptionalJson(path.join(modelDir, 'tokenizer_config.json'))) ?? {},
    specialTokensMap: await readOptionalJson(path.join(modelDir, 'special_tokens_map.json')),
    generationConfig: await readOptionalJson(path.join(modelDir, 'generation_config.json')),
    chatTemplateFile: await readOptionalText(path.join(modelDir, 'chat_template.jinja')),
  };
  return createTokenizer(files, modelDir);
}

/**
 * Builds a Tokenizer from parsed tokenizer files. `source` names the folder in error messages.
 */
export function createTokenizer(files: TokenizerFiles, source = 'the tokenizer files'): Tokenizer {
  const config = files.tokenizerConfig;

  let inner: HfTokenizer;
  try {
    inner = new HfTokenizer(files.tokenizerJson, config);
  } catch (error) {
    throw new StudioError(
      'MODEL_FORMAT',
      `Cannot build the tokenizer from ${source}: ${(error as Error).message}`,
      'Check that tokenizer.json comes from the same model repository and is complete.',
    );
  }

  const tokenToId = (token: string): number | undefined => inner.token_to_id(token);
  const idOf = (token: string | undefined): number | undefined =>
    token === undefined ? undefined : tokenToId(token);

  // 1. Special tokens: tokenizer_config.json first, then special_tokens_map.json.
  const bosToken = specialTokenContent(config.bos_token) ?? specialTokenContent(files.specialTokensMap?.bos_token);
  const eosToken = specialTokenContent(config.eos_token) ?? specialTokenContent(files.specialTokensMap?.eos_token);
  const padToken = specialTokenContent(config.pad_token) ?? specialTokenContent(files.specialTokensMap?.pad_token);

  const bosTokenId = idOf(bosToken) ?? firstTokenId(files.generationConfig?.bos_token_id);
  const eosTokenId = idOf(eosToken) ?? firstTokenId(files.generationConfig?.eos_token_id);
  const padTokenId = idOf(padToken) ?? firstTokenId(files.generationConfig?.pad_token_id) ?? eosTokenId;

  // 2. What encode adds around a sequence.
  const { prefix, suffix } = specialTokensAround(inner, config, bosTokenId, eosTokenId);

  // 3. Vocabulary size, counting added tokens that sit past the base vocabulary.
  let maxId = -1;
  for (const id of inner.get_vocab(true).values()) maxId = Math.max(maxId, id);
  const vocabSize = maxId + 1;

  const specialTokens = collectSpecialTokens(files.tokenizerJson, [bosToken, eosToken, padToken]);

  // 4. Chat template, compiled once.
  const chatTemplate = selectChatTemplate(config.chat_template, files.chatTemplateFile);
  let compiled: Template | undefined;
  const templateText = chatTemplate ?? FALLBACK_CHAT_TEMPLATE;

  return {
    bosTokenId,
    eosTokenId,
    padTokenId,
    vocabSize,
    prefixTokenIds: prefix,
    suffixTokenIds: suffix,
    specialTokens,
    chatTemplate,
    tokenToId,

    encode(text: string, options: EncodeOptions = {}): number[] {
      const ids = inner.encode(text, { add_special_tokens: false }).ids;
      if (options.addSpecialTokens === false) return ids;
      return [...prefix, ...ids, ...suffix];
    },

    decode(ids: readonly number[], options: DecodeOptions = {}): string {
      // The tokenizers library rejects an empty array, but decoding nothing (a generation that
      // stopped at once at EOS) is the empty string.
      if (ids.length === 0) return '';
      return inner.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false });
    },

    applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
      if (!compiled) compiled = compileTemplate(templateText, source);
      // @huggingface/jinja defines raise_exception and strftime_now itself, so a template's
      // raise_exception call arrives here as a thrown Error.
      try {
        return compiled.render({
          messages: messages.map((message) => ({ ...message })),
          add_generation_prompt: options.addGenerationPrompt ?? false,
          bos_token: bosToken ?? '',
          eos_token: eosToken ?? '',
          pad_token: padToken ?? '',
        });
      } catch (error) {
        throw new StudioError(
          'INVALID_ARGUMENT',
          `The chat template of ${source} failed on a conversation of ${messages.length} messages: ${(error as Error).message}`,
          'Check that the roles follow the order the model expects (system first, then user and assistant alternating).',
        );
      }
    },
  };
}

/**
 * Finds the ids encode adds before and after a text. The `tokenizer.json` post-processor decides
 * by default; `add_bos_token` and `add_eos_token` in `tokenizer_config.json` override it, as
 * transformers does for Llama-style fast tokenizers.
 */
function specialTokensAround(
  inner: HfTokenizer,
  config: JsonObject,
  bosTokenId: number | undefined,
  eosTokenId: number | undefined,
): { prefix: number[]; suffix: number[] } {
  // A probe text shows what the post-processor adds: its ids with and without special tokens
  // differ only by the added prefix and suffix.
  const probe = 'a';
  const plain = inner.encode(probe, { add_special_tokens: false }).ids;
  const full = inner.encode(probe, { add_special_tokens: true }).ids;
  let start = -1;
  for (let i = 0; i + plain.length <= full.length && start < 0; i++) {
    if (plain.every((id, j) => full[i + j] === id)) start = i;
  }
  let prefix = start >= 0 ? full.slice(0, start) : [];
  let suffix = start >= 0 ? full.slice(start + plain.length) : [];

  if (bosTokenId !== undefined) {
    if (config.add_bos_token === true && prefix[0] !== bosTokenId) prefix = [bosTokenId, ...prefix];
    if (config.add_bos_token === false) prefix = prefix.filter((id) => id !== bosTokenId);
  }
  if (eosTokenId !== undefined) {
    if (config.add_eos_token === true && suffix[suffix.length - 1] !== eosTokenId) suffix = [...suffix, eosTokenId];
    if (config.add_eos_token === false) suffix = suffix.filter((id) => id !== eosTokenId);
  }
  return { prefix, suffix };
}

/** Content of a special token given as a string or as an AddedToken object `{content: ...}`. */
function specialTokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as JsonObject).content === 'string') {
    return (value as JsonObject).content as string;
  }
  return undefined;
}

/** `generation_config.json` ids may be a number or a list of numbers. */
function firstTokenId(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isInteger(value)) return value;
  if (Array.isArray(value) && typeof value[0] === 'number') return value[0];
  return undefined;
}

function collectSpecialTokens(tokenizerJson: JsonObject, named: (string | undefined)[]): string[] {
  const tokens = new Set<string>();
  const added = Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : [];
  for (const token of added as JsonObject[]) {
    if (token.special === true && typeof token.content === 'string') tokens.add(token.content);
  }
  for (const token of named) if (token) tokens.add(token);
  return [...tokens];
}

/**
 * Picks the chat template: `tokenizer_config.json` contains a string, or a list of
 * `{name, template}` where the one named "default" is used; `chat_template.jinja` comes next.
 */
function selectChatTemplate(value: unknown, fileText: string | undefined): string | undefined {
  if (typeof value === 'string' && value.length > 0) return value;
  if (Array.isArray(value)) {
    const entries = value as { name?: unknown; template?: unknown }[];
    const chosen = entries.find((entry) => entry.name === 'default') ?? entries[0];
    if (chosen && typeof chosen.template === 'string') return chosen.template;
  }
  if (fileText !== undefined && fileText.trim().length > 0) return fileText;
  return undefined;
}

function compileTemplate(text: string, source: string): Template {
  try {
    return new Template(text);
  } catch (error) {
    throw new StudioError(
      'MODEL_FORMAT',
      `The chat template of ${source} is not valid Jinja: ${(error as Error).message}`,
      'Replace chat_template in tokenizer_config.json with the one from the model repository.',
    );
  }
}

async function readOptionalText(filePath: string): Promise<string | undefined> {
  try {
    return await readFile(filePath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

async function readOptionalJson(filePath: string): Promise<JsonObject | undefined> {
  const text = await readOptionalText(filePath);
  return text === undefined ? undefined : parseJsonFile(filePath, text);
}

function parseJsonFile(filePath: string, text: string): JsonObject {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as JsonObject;
    throw new Error('the top level is not a JSON object');
  } catch (error) {
    throw new StudioError(
      'MODEL_FORMAT',
      `${filePath} is not a valid tokenizer file: ${(error as Error).message}`,
      'Download the file again from the model repository.',
    );
  }
}
