/**
 * Error codes a user can meet. Each one travels across processes (worker → main → renderer)
 * as the plain object `{ code, message, hint }`.
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'DATASET_PARSE'
  | 'DATASET_EMPTY'
  | 'MODEL_UNSUPPORTED'
  | 'MODEL_FILES_MISSING'
  | 'MODEL_FORMAT'
  | 'TOKENIZER_MISSING'
  | 'ADAPTER_MISMATCH'
  | 'SHAPE_MISMATCH'
  | 'OUT_OF_MEMORY'
  | 'NAN_LOSS'
  | 'WORKER_EXITED'
  | 'EXPORT_FAILED'
  | 'RUN_STATE'
  | 'STORE_UNREADABLE'
  | 'UNAUTHORIZED'
  | 'INTERNAL';

/** The serializable form of a StudioError. */
export interface ErrorPayload {
  code: ErrorCode;
  message: string;
  hint?: string;
}

/**
 * An error with a code, a message that names the failing value, and a hint that says what to do.
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

/** Converts any thrown value into a payload; unknown errors become INTERNAL. */
export function toErrorPayload(error: unknown): ErrorPayload {
  if (error instanceof StudioError) return error.toPayload();
  if (isErrorPayload(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  return { code: 'INTERNAL', message };
}

export function isErrorPayload(value: unknown): value is ErrorPayload {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as ErrorPayload).code === 'string' &&
    typeof (value as ErrorPayload).message === 'string'
  );
}

/** Formats a payload as one line for logs and the CLI. */
export function formatError(payload: ErrorPayload): string {
  return payload.hint ? `${payload.code}: ${payload.message} ${payload.hint}` : `${payload.code}: ${payload.message}`;
}
