/**
 * Dataset schemas: which fields a row carries, detected from the first rows of a file unless
 * the user names one.
 */
import { StudioError } from '../../shared/errors';

/**
 * - `tokens`: pre-tokenized `input_ids` (+ optional `labels`, `attention_mask`).
 * - `messages`: OpenAI chat, `messages: [{role, content}]`.
 * - `sharegpt`: `conversations: [{from, value}]`.
 * - `alpaca`: `instruction`, optional `input`, `output`.
 * - `prompt_completion`: `prompt` and `completion` (or `response`), optional `system` / `system_prompt`.
 * - `text`: `text`.
 */
export type DatasetSchema = 'tokens' | 'messages' | 'sharegpt' | 'alpaca' | 'prompt_completion' | 'text';

/** In priority order: a row that fits several schemas takes the first. */
export const DATASET_SCHEMAS: readonly DatasetSchema[] = ['tokens', 'messages', 'sharegpt', 'alpaca', 'prompt_completion', 'text'];

/** Rows looked at to detect the schema. */
export const SCHEMA_SAMPLE_ROWS = 100;

const SCHEMA_FIELDS: Record<DatasetSchema, string> = {
  tokens: 'input_ids',
  messages: 'messages',
  sharegpt: 'conversations',
  alpaca: 'instruction, input, output',
  prompt_completion: 'prompt, completion (or response)',
  text: 'text',
};

/** Describes the fields a schema reads, for messages. */
export function schemaFields(schema: DatasetSchema): string {
  return SCHEMA_FIELDS[schema];
}

/** Returns the schema whose key fields a row has, or undefined when it fits none. */
export function matchSchema(value: unknown): DatasetSchema | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const has = (key: string) => Object.hasOwn(value, key) && (value as Record<string, unknown>)[key] != null;

  if (has('input_ids')) return 'tokens';
  if (has('messages')) return 'messages';
  if (has('conversations')) return 'sharegpt';
  if (has('instruction') && has('output')) return 'alpaca';
  if (has('prompt') && (has('completion') || has('response'))) return 'prompt_completion';
  if (has('text')) return 'text';
  return undefined;
}

/**
 * Picks the schema most of the sample rows fit; ties go to the earlier one in DATASET_SCHEMAS.
 *
 * @throws StudioError DATASET_PARSE when no sample row fits any schema; the message lists the
 *   columns found.
 */
export function detectSchema(samples: readonly unknown[], fileName: string): DatasetSchema {
  const votes = new Map<DatasetSchema, number>();
  const columns = new Set<string>();
  for (const sample of samples) {
    const schema = matchSchema(sample);
    if (schema) votes.set(schema, (votes.get(schema) ?? 0) + 1);
    if (typeof sample === 'object' && sample !== null && !Array.isArray(sample)) {
      for (const key of Object.keys(sample)) if (columns.size < 30) columns.add(key);
    }
  }

  let best: DatasetSchema | undefined;
  for (const schema of DATASET_SCHEMAS) {
    const count = votes.get(schema) ?? 0;
    if (count > 0 && (best === undefined || count > (votes.get(best) ?? 0))) best = schema;
  }
  if (best) return best;

  const found = columns.size > 0 ? `columns ${[...columns].map((c) => `"${c}"`).join(', ')}` : 'no object rows';
  throw new StudioError(
    'DATASET_PARSE',
    `${fileName}: the first ${samples.length} rows match no known schema (found ${found}).`,
    `Rename the columns to one of: ${DATASET_SCHEMAS.map((s) => `${s} (${SCHEMA_FIELDS[s]})`).join('; ')}. ` +
      'Or choose the schema by hand in the import options.',
  );
}
