/**
 * Error codes a user can meet. Each one travels across processes (worker → main → renderer)
 * as the plain object `{ code, message, hint }`.
 */
export const ERROR_CODES = [
  'INVALID_ARGUMENT',
  'NOT_FOUND',
  'DATASET_PARSE',
  'DATASET_EMPTY',
  'MODEL_UNSUPPORTED',
  'MODEL_FILES_MISSING',
  'MODEL_FORMAT',
  'TOKENIZER_MISSING',
  'ADAPTER_MISMATCH',
  'SHAPE_MISMATCH',
  'OUT_OF_MEMORY',
  'NAN_LOSS',
  'WORKER_EXITED',
  'EXPORT_FAILED',
  'RUN_STATE',
  'STORE_UNREADABLE',
  'UNAUTHORIZED',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

const KNOWN_CODES: ReadonlySet<string> = new Set(ERROR_CODES);

/** The serializable form of a StudioError. */
export interface ErrorPayload {
  code: ErrorCode;
  message: string;
  hint?: string;
}

/**
 * An error with a code, a message that names the failing value, and a hint with the fix.
 */
export class StudioError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;

  constructor(code: ErrorCode, message: string, hint?: string) {
    super(message);
    this.name = 'StudioError';
    this.code = code;
    this.hint = hint;
  }

  toPayload(): ErrorPayload {
    return { code: this.code, message: this.message, hint: this.hint };
  }
}

/**
 * Converts any thrown value into a payload; unknown errors become INTERNAL. A Node system error
 * keeps its own code (EISDIR, EACCES...) inside the message, which already starts with it.
 */
export function toErrorPayload(error: unknown): ErrorPayload {
  if (error instanceof StudioError) return error.toPayload();
  if (isErrorPayload(error)) return error;
  if (error instanceof Error) {
    const nodeCode = (error as NodeJS.ErrnoException).code;
    const message = typeof nodeCode === 'string' && !error.message.includes(nodeCode) ? `${nodeCode}: ${error.message}` : error.message;
    return { code: 'INTERNAL', message };
  }
  return { code: 'INTERNAL', message: String(error) };
}

/** True for a plain `{ code, message, hint? }` object whose code is one of ERROR_CODES. */
export function isErrorPayload(value: unknown): value is ErrorPayload {
  if (typeof value !== 'object' || value === null || !isPlainObject(value)) return false;
  const candidate = value as Record<string, unknown>;
  return (
    typeof candidate.code === 'string' &&
    KNOWN_CODES.has(candidate.code) &&
    typeof candidate.message === 'string'
  );
}

/** Plain objects only (also from another realm): an Error or class instance is not a payload. */
function isPlainObject(value: object): boolean {
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === null || Object.getPrototypeOf(proto) === null;
}

/** Formats a payload as one line for logs and the CLI. */
export function formatError(payload: ErrorPayload): string {
  return payload.hint ? `${payload.code}: ${payload.message} ${payload.hint}` : `${payload.code}: ${payload.message}`;
}
