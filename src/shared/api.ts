/**
 * The StudioApi contract: what the renderer may ask of the services, over Electron IPC or over
 * the web bridge's HTTP + server-sent events. Every request has a zod schema here, and both
 * transports validate with these schemas before a service sees the value.
 *
 * Calling convention: every method takes one JSON object (or nothing) and returns a promise of
 * one JSON value. Failures arrive as `ErrorPayload` (`{ code, message, hint }`).
 */
import { z } from 'zod';
import { StudioError, type ErrorPayload } from './errors';
import type { LogLevel, ProgressInfo, RunResult, StepMetrics } from './protocol';
import { MAX_ATTENTION_MIB, resolveGradientCheckpointing, type TrainConfig } from './train-config';

// ---------------------------------------------------------------------------------------------
// Models

/** What the engine reads from a Hugging Face model folder. */
export interface ModelInfo {
  path: string;
  name: string;
  architecture: string;
  modelType: string;
  supported: boolean;
  unsupportedReason?: string;
  parameterCount: number;
  dtype: string;
  sizeBytes: number;
  vocabSize: number;
  contextLength: number;
  hiddenSize: number;
  numLayers: number;
  /** LoRA target suffixes such as `q_proj`, `v_proj`, `c_attn`. */
  linearModules: string[];
  hasTokenizer: boolean;
  hasChatTemplate: boolean;
}

/** A model folder the user opened before. */
export interface ModelEntry {
  path: string;
  name: string;
  architecture?: string;
  lastUsedAt: string;
}

// ---------------------------------------------------------------------------------------------
// Datasets

/** A row left out of an import, with where it sits in the source file and why. */
export interface SkippedRow {
  /** 1-based ordinal of the row among the file's records. */
  row: number;
  /** 1-based line where the row starts, for text formats that track lines. */
  line?: number;
  /** Machine-readable reason, e.g. `invalid_json`, `missing_field`. */
  reason: string;
  message: string;
}

/** Example lengths of the kept rows, in tokens when a tokenizer measured them. */
export interface LengthHistogram {
  unit: 'tokens' | 'characters';
  count: number;
  min: number;
  median: number;
  p95: number;
  max: number;
  /** Bins with inclusive `start` and exclusive `end`. */
  bins: { start: number; end: number; count: number }[];
  sampled: boolean;
}

/** The validation report of one import. */
export interface DatasetReport {
  rowsRead: number;
  rowsKept: number;
  rowsSkipped: number;
  skippedByReason: Record<string, number>;
  /** The first skipped rows (a capped list); `skippedByReason` counts all of them. */
  skipped: SkippedRow[];
  /** Kept examples longer than `maxSeqLength`, which training truncates. */
  truncated: number;
  maxSeqLength?: number;
  lengths: LengthHistogram;
  notes: string[];
}

export interface DatasetSummary {
  id: string;
  name: string;
  sourcePath: string;
  format: string;
  schema: string;
  rows: number;
  sizeBytes: number;
  hash: string;
  createdAt: string;
}

export interface DatasetDetail extends DatasetSummary {
  report: DatasetReport;
}

/** One piece of a rendered example. `trained` is false where the loss is masked (prompt). */
export interface PreviewSegment {
  text: string;
  trained: boolean;
}

export interface PreviewExample {
  index: number;
  segments: PreviewSegment[];
  /** Token count with the chosen model's tokenizer; undefined when none was given. */
  tokens?: number;
}

export interface DatasetPreview {
  datasetId: string;
  tokenizer?: string;
  examples: PreviewExample[];
}

// ---------------------------------------------------------------------------------------------
// Runs

export const RUN_STATUSES = ['queued', 'running', 'paused', 'completed', 'failed', 'cancelled', 'interrupted'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

export interface RunSummary {
  id: string;
  name: string;
  modelPath: string;
  modelName: string;
  datasetId?: string;
  datasetName?: string;
  method: TrainConfig['method'];
  status: RunStatus;
  tags: string[];
  step: number;
  totalSteps?: number;
  finalLoss?: number;
  bestValLoss?: number;
  backend?: string;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  /** Training time so far (running) or in total (finished), in milliseconds. */
  durationMs?: number;
  error?: ErrorPayload;
}

export interface RunEvent {
  time: string;
  level: LogLevel;
  message: string;
}

export interface ArtifactEntry {
  id: string;
  kind: string;
  path: string;
  step?: number;
  sizeBytes?: number;
  createdAt: string;
}

export interface RunDetail {
  run: RunSummary;
  config: TrainConfig;
  metrics: StepMetrics[];
  events: RunEvent[];
  artifacts: ArtifactEntry[];
  progress?: ProgressInfo;
  result?: RunResult;
}

/** Memory and time estimate for a configuration. */
export interface TrainingEstimate {
  trainableParameters: number;
  totalParameters: number;
  /** Peak memory, in bytes (an estimate). */
  memoryBytes: number;
  totalSteps?: number;
  /** Estimated wall time for the whole run, in seconds. */
  seconds?: number;
  notes: string[];
}

export interface GenerationResult {
  prompt: string;
  base: string;
  adapted: string;
}

// ---------------------------------------------------------------------------------------------
// Exports

export const EXPORT_KINDS = ['peft', 'merged', 'gguf'] as const;
export type ExportKind = (typeof EXPORT_KINDS)[number];

export interface ExportResult {
  runId: string;
  kind: ExportKind;
  path: string;
  files: { name: string; sizeBytes: number }[];
}

// ---------------------------------------------------------------------------------------------
// System

/** Which parts of the engine and host this build provides. */
export interface Capabilities {
  /** Native folder and file dialogs and "show in folder" (desktop app only). */
  dialogs: boolean;
  inspectModel: boolean;
  training: boolean;
  estimate: boolean;
  generate: boolean;
  export: boolean;
  qlora: boolean;
  demoModel: boolean;
  demoDataset: boolean;
}

export interface BackendAttemptInfo {
  name: string;
  ok: boolean;
  reason?: string;
  fix?: string;
}

export interface BackendInfo {
  chosen: string;
  tfBackend: string;
  forced: boolean;
  attempts: BackendAttemptInfo[];
  simd?: boolean;
  threads?: number;
  tfjsVersion: string;
}

export interface SystemInfo {
  appVersion: string;
  appDataDir: string;
  logFile?: string;
  host: 'electron' | 'web';
  versions: Record<string, string>;
  platform: string;
  capabilities: Capabilities;
  /** Capabilities that are off, with the reason shown to the user. */
  unavailable: Partial<Record<keyof Capabilities, string>>;
  demoModelPath?: string;
  demoDatasetPath?: string;
}

// ---------------------------------------------------------------------------------------------
// Request schemas

const MAX_PATH_LENGTH = 4096;

/**
 * An absolute filesystem path from the user. Relative paths are rejected because main, the web
 * bridge and the worker each have a different working directory.
 */
export const pathSchema = z
  .string({ error: 'expected a path string' })
  .trim()
  .min(1, 'path is empty')
  .max(MAX_PATH_LENGTH, `path is longer than ${MAX_PATH_LENGTH} characters`)
  .refine((value) => !value.includes('\0'), 'path contains a NUL character')
  .refine(isAbsolutePath, 'path must be absolute (start with / or a drive letter such as C:\\)');

export function isAbsolutePath(value: string): boolean {
  return value.startsWith('/') || /^[A-Za-z]:[\\/]/.test(value) || value.startsWith('\\\\');
}

const idSchema = z
  .string({ error: 'expected an id string' })
  .min(1, 'id is empty')
  .max(128, 'id is longer than 128 characters')
  .regex(/^[A-Za-z0-9_-]+$/, 'id may contain only letters, digits, _ and -');

const noRequest = z
  .union([z.undefined(), z.null(), z.object({}).strict()])
  .transform(() => undefined);

const positiveInt = (label: string, max: number) =>
  z
    .number({ error: `${label} must be a number` })
    .int(`${label} must be a whole number`)
    .min(1, `${label} must be at least 1`)
    .max(max, `${label} must be at most ${max}`);

const nonNegativeInt = (label: string, max: number) =>
  z
    .number({ error: `${label} must be a number` })
    .int(`${label} must be a whole number`)
    .min(0, `${label} must be 0 or more`)
    .max(max, `${label} must be at most ${max}`);

const moduleName = z
  .string()
  .regex(/^[A-Za-z0-9_.]+$/, 'module names may contain only letters, digits, _ and .');

export const loraSettingsSchema = z.object({
  r: positiveInt('Rank', 1024),
  loraAlpha: z.number({ error: 'Alpha must be a number' }).gt(0, 'Alpha must be greater than 0').max(100_000),
  loraDropout: z
    .number({ error: 'Dropout must be a number' })
    .min(0, 'Dropout must be 0 or more')
    .lt(1, 'Dropout must be less than 1'),
  targetModules: z.union([
    z.literal('all-linear'),
    z.array(moduleName).min(1, 'Choose at least one target module').max(64),
  ]),
  layersToTransform: z.array(nonNegativeInt('Layer index', 10_000)).optional(),
  useRslora: z.boolean(),
  initLoraWeights: z.enum(['kaiming', 'gaussian']),
});

export const quantSettingsSchema = z.object({
  quantType: z.enum(['nf4', 'fp4']),
  blocksize: positiveInt('Block size', 4096),
  doubleQuant: z.boolean(),
});

/**
 * Every field of `TrainConfig` with the limits the form shows inline. `gradientCheckpointing` may
 * be left out: the parsed config then has the method's default (on for QLoRA, off for LoRA).
 */
export const trainConfigSchema = z
  .object({
    name: z.string().max(200, 'Name must be at most 200 characters').optional(),
    modelPath: pathSchema,
    datasetId: idSchema.optional(),
    datasetPath: pathSchema.optional(),
    validationPath: pathSchema.optional(),
    validationSplit: z
      .number({ error: 'Validation split must be a number' })
      .min(0, 'Validation split must be 0 or more')
      .max(0.5, 'Validation split must be at most 0.5'),
    method: z.enum(['lora', 'qlora']),
    lora: loraSettingsSchema,
    quant: quantSettingsSchema.optional(),
    initAdapter: pathSchema.optional(),
    learningRate: z
      .number({ error: 'Learning rate must be a number' })
      .gt(0, 'Learning rate must be greater than 0')
      .max(1, 'Learning rate must be at most 1'),
    weightDecay: z.number().min(0, 'Weight decay must be 0 or more').max(1, 'Weight decay must be at most 1'),
    adamBeta1: z.number().min(0).lt(1, 'Adam beta1 must be less than 1'),
    adamBeta2: z.number().min(0).lt(1, 'Adam beta2 must be less than 1'),
    adamEpsilon: z.number().gt(0, 'Adam epsilon must be greater than 0'),
    schedule: z.enum(['constant', 'linear', 'cosine']),
    warmupSteps: nonNegativeInt('Warmup steps', 1_000_000),
    maxSteps: nonNegativeInt('Max steps', 10_000_000),
    epochs: z
      .number({ error: 'Epochs must be a number' })
      .min(0, 'Epochs must be 0 or more')
      .max(1000, 'Epochs must be at most 1000'),
    batchSize: positiveInt('Batch size', 4096),
    gradientAccumulationSteps: positiveInt('Gradient accumulation', 4096),
    maxGradNorm: z.number().min(0, 'Max gradient norm must be 0 or more'),
    maxSeqLength: z
      .number({ error: 'Max sequence length must be a number' })
      .int('Max sequence length must be a whole number')
      .min(8, 'Max sequence length must be at least 8')
      .max(131_072, 'Max sequence length must be at most 131072'),
    trainOnPrompt: z.boolean(),
    packing: z.boolean(),
    evalSteps: nonNegativeInt('Eval interval', 10_000_000),
    saveSteps: nonNegativeInt('Checkpoint interval', 10_000_000),
    seed: nonNegativeInt('Seed', 2 ** 31 - 1),
    gradientCheckpointing: z.boolean().optional(),
    maxAttentionBytes: z
      .number({ error: 'Max attention memory must be a number' })
      .gt(0, 'Max attention memory must be greater than 0')
      .max(MAX_ATTENTION_MIB * 1024 * 1024, `Max attention memory must be at most ${MAX_ATTENTION_MIB} MiB`)
      .int('Max attention memory must be a whole number of bytes')
      .optional(),
    samplePrompts: z.array(z.string().max(10_000)).max(16).optional(),
    backend: z.string().max(32).optional(),
  })
  .superRefine((config, ctx) => {
    if (config.maxSteps === 0 && config.epochs <= 0) {
      ctx.addIssue({ code: 'custom', path: ['epochs'], message: 'Set epochs above 0 or max steps above 0' });
    }
    if (!config.datasetId && !config.datasetPath) {
      ctx.addIssue({ code: 'custom', path: ['datasetId'], message: 'Choose a dataset' });
    }
    if (config.method === 'qlora' && !config.quant) {
      ctx.addIssue({ code: 'custom', path: ['quant'], message: 'QLoRA needs quantization settings' });
    }
    if (config.maxSteps > 0 && config.warmupSteps > config.maxSteps) {
      ctx.addIssue({ code: 'custom', path: ['warmupSteps'], message: 'Warmup steps must not exceed max steps' });
    }
  })
  .transform(
    (config): TrainConfig => ({ ...config, gradientCheckpointing: resolveGradientCheckpointing(config.method, config.gradientCheckpointing) }),
  ) satisfies z.ZodType<TrainConfig, unknown>;

const nameSchema = z.string().trim().min(1, 'Name is empty').max(200, 'Name must be at most 200 characters');
const tagSchema = z
  .string()
  .trim()
  .min(1, 'Tag is empty')
  .max(40, 'Tag must be at most 40 characters')
  .regex(/^[^,]+$/, 'Tags may not contain commas');

/**
 * Request schemas by namespace and method. The keys are the public method names; the HTTP route
 * is `POST /api/<namespace>/<method>` and the IPC channel `studio:<namespace>.<method>`.
 */
export const API_SCHEMAS = {
  models: {
    inspect: z.object({ path: pathSchema }).strict(),
    recent: noRequest,
    chooseFolder: noRequest,
  },
  datasets: {
    import: z.object({ path: pathSchema, name: nameSchema.optional(), modelPath: pathSchema.optional() }).strict(),
    list: noRequest,
    get: z.object({ id: idSchema }).strict(),
    preview: z
      .object({
        id: idSchema,
        modelPath: pathSchema.optional(),
        limit: z.number().int().min(1).max(100).optional(),
        trainOnPrompt: z.boolean().optional(),
      })
      .strict(),
    remove: z.object({ id: idSchema }).strict(),
    chooseFile: noRequest,
  },
  runs: {
    estimate: z.object({ config: trainConfigSchema }).strict(),
    start: z.object({ config: trainConfigSchema }).strict(),
    pause: z.object({ id: idSchema }).strict(),
    resume: z.object({ id: idSchema }).strict(),
    cancel: z.object({ id: idSchema }).strict(),
    list: noRequest,
    get: z.object({ id: idSchema }).strict(),
    rename: z.object({ id: idSchema, name: nameSchema }).strict(),
    setTags: z.object({ id: idSchema, tags: z.array(tagSchema).max(32) }).strict(),
    remove: z.object({ id: idSchema }).strict(),
    generate: z
      .object({
        id: idSchema,
        prompt: z.string().min(1, 'Prompt is empty').max(10_000, 'Prompt must be at most 10000 characters'),
        maxNewTokens: z.number().int().min(1).max(1024).optional(),
      })
      .strict(),
  },
  exports: {
    start: z.object({ runId: idSchema, kind: z.enum(EXPORT_KINDS), destination: pathSchema }).strict(),
    chooseDestination: noRequest,
    showInFolder: z.object({ path: pathSchema }).strict(),
  },
  system: {
    info: noRequest,
    backend: noRequest,
  },
} as const;

export type ApiNamespace = keyof typeof API_SCHEMAS;
export type ApiMethod<N extends ApiNamespace> = keyof (typeof API_SCHEMAS)[N] & string;

// ---------------------------------------------------------------------------------------------
// The interface

export type ImportDatasetRequest = z.infer<typeof API_SCHEMAS.datasets.import>;
export type PreviewRequest = z.infer<typeof API_SCHEMAS.datasets.preview>;
export type GenerateRequest = z.infer<typeof API_SCHEMAS.runs.generate>;
export type ExportRequest = z.infer<typeof API_SCHEMAS.exports.start>;

/** Events pushed from the services to the renderer. */
export interface StudioEvents {
  'run-updated': RunSummary;
  'run-removed': { id: string };
  'run-metrics': { runId: string; metrics: StepMetrics };
  'run-progress': { runId: string; progress: ProgressInfo };
  'run-log': { runId: string; event: RunEvent };
  'dataset-progress': { path: string; bytesRead: number; totalBytes: number; rowsRead: number };
  'export-progress': { runId: string; kind: ExportKind; fraction: number; message: string };
}
export type StudioEventName = keyof StudioEvents;
export const STUDIO_EVENT_NAMES: readonly StudioEventName[] = [
  'run-updated',
  'run-removed',
  'run-metrics',
  'run-progress',
  'run-log',
  'dataset-progress',
  'export-progress',
];

export type Unsubscribe = () => void;

export interface StudioApi {
  models: {
    inspect(request: { path: string }): Promise<ModelInfo>;
    /** Model folders opened before, newest first. */
    recent(): Promise<ModelEntry[]>;
    /** Opens a folder dialog (desktop app); null when cancelled or not available. */
    chooseFolder(): Promise<string | null>;
  };
  datasets: {
    import(request: ImportDatasetRequest): Promise<DatasetDetail>;
    list(): Promise<DatasetSummary[]>;
    get(request: { id: string }): Promise<DatasetDetail>;
    preview(request: PreviewRequest): Promise<DatasetPreview>;
    remove(request: { id: string }): Promise<void>;
    chooseFile(): Promise<string | null>;
  };
  runs: {
    estimate(request: { config: TrainConfig }): Promise<TrainingEstimate>;
    start(request: { config: TrainConfig }): Promise<RunSummary>;
    pause(request: { id: string }): Promise<RunSummary>;
    resume(request: { id: string }): Promise<RunSummary>;
    cancel(request: { id: string }): Promise<RunSummary>;
    list(): Promise<RunSummary[]>;
    get(request: { id: string }): Promise<RunDetail>;
    rename(request: { id: string; name: string }): Promise<RunSummary>;
    setTags(request: { id: string; tags: string[] }): Promise<RunSummary>;
    /** Deletes the run, its metrics and its folder (checkpoints, adapter, exports). */
    remove(request: { id: string }): Promise<void>;
    generate(request: GenerateRequest): Promise<GenerationResult>;
  };
  exports: {
    start(request: ExportRequest): Promise<ExportResult>;
    chooseDestination(): Promise<string | null>;
    showInFolder(request: { path: string }): Promise<void>;
  };
  system: {
    info(): Promise<SystemInfo>;
    /** Selects the tfjs backend (once per process) and returns the report. */
    backend(): Promise<BackendInfo>;
  };
}

/** The API plus typed event subscriptions, as the renderer sees it. */
export interface StudioClient extends StudioApi {
  on<E extends StudioEventName>(event: E, listener: (payload: StudioEvents[E]) => void): Unsubscribe;
  /** Filesystem path of a dropped file or folder; only the desktop app can read it. */
  pathForFile?(file: File): string;
}

// ---------------------------------------------------------------------------------------------
// Validation and dispatch, shared by the IPC handlers and the HTTP routes

export function isApiMethod(namespace: string, method: string): boolean {
  if (!Object.hasOwn(API_SCHEMAS, namespace)) return false;
  return Object.hasOwn(API_SCHEMAS[namespace as ApiNamespace], method);
}

/** Formats zod issues as one sentence that names each field and the received value. */
export function describeIssues(error: z.ZodError, input: unknown): string {
  return error.issues
    .map((issue) => {
      const where = issue.path.length ? issue.path.join('.') : 'request';
      const received = readPath(input, issue.path);
      const shown = received === undefined ? '' : ` (received ${preview(received)})`;
      return `${where}: ${issue.message}${shown}`;
    })
    .join('; ');
}

function readPath(value: unknown, path: PropertyKey[]): unknown {
  let current = value;
  for (const key of path) {
    if (typeof current !== 'object' || current === null) return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

function preview(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/**
 * Validates one request against its schema. Throws `NOT_FOUND` for an unknown method and
 * `INVALID_ARGUMENT` for a request that fails its schema.
 */
export function validateRequest(namespace: string, method: string, input: unknown): unknown {
  if (!isApiMethod(namespace, method)) {
    throw new StudioError(
      'NOT_FOUND',
      `Unknown API method "${namespace}.${method}".`,
      `Use one of: ${listMethods().join(', ')}.`,
    );
  }
  const schema = (API_SCHEMAS[namespace as ApiNamespace] as Record<string, z.ZodType>)[method];
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    throw new StudioError(
      'INVALID_ARGUMENT',
      `Invalid request to ${namespace}.${method}: ${describeIssues(parsed.error, input)}.`,
      'Correct the named fields and try again.',
    );
  }
  return parsed.data;
}

/** Validates a request and calls the matching method of `api`. */
export async function dispatchRequest(
  api: StudioApi,
  namespace: string,
  method: string,
  input: unknown,
): Promise<unknown> {
  const request = validateRequest(namespace, method, input);
  const target = api[namespace as ApiNamespace] as unknown as Record<string, (request: unknown) => Promise<unknown>>;
  return target[method].call(target, request);
}

export function listMethods(): string[] {
  return Object.entries(API_SCHEMAS).flatMap(([namespace, methods]) =>
    Object.keys(methods).map((method) => `${namespace}.${method}`),
  );
}
