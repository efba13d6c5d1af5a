/**
 * Studio: the StudioApi implemented on the services (run store, job manager, dataset service)
 * and the engine. Electron main and the web bridge both create one and route requests to it
 * after validating them with the schemas in `shared/api`. This class never imports electron,
 * so the host passes its dialogs in.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import type {
  ArtifactEntry,
  BackendInfo,
  Capabilities,
  DatasetDetail,
  DatasetPreview,
  DatasetReport,
  DatasetSummary,
  ExportRequest,
  ExportResult,
  GenerateRequest,
  GenerationResult,
  ImportDatasetRequest,
  ModelEntry,
  ModelInfo,
  PreviewExample,
  PreviewRequest,
  RunDetail,
  RunSummary,
  StudioApi,
  StudioEventName,
  StudioEvents,
  SystemInfo,
  TrainingEstimate,
  Unsubscribe,
} from '../shared/api';
import { StudioError, toErrorPayload } from '../shared/errors';
import type { ProgressInfo, RunResult, WorkerTransport } from '../shared/protocol';
import type { DatasetRecord, RunRecord } from '../shared/records';
import type { TrainConfig } from '../shared/train-config';
import { selectBackend } from '../engine/backend';
import { encodeRecord } from '../engine/data/encode';
import type { NormalizedRecord } from '../engine/data/normalize';
import { estimateTraining, type TrainingEstimate as EngineEstimate } from '../engine/estimate';
import { exportGgufAdapter, exportMergedModel, exportPeftAdapter, libraryVersions, type RunCard } from '../engine/export';
import { generate } from '../engine/generate';
import { loadAdapter } from '../engine/lora/adapter';
import { loadModel } from '../engine/models';
import { inspectModel, type ModelInfo as EngineModelInfo } from '../engine/models/inspect';
import { loadTokenizer, type Tokenizer } from '../engine/tokenizer';
import { DatasetService, readNormalized } from './datasets';
import { JobManager, type Logger, type RunLogLine } from './jobs';
import { RunStore } from './store';

/** Native dialogs of the desktop app; the web bridge has none. */
export interface HostDialogs {
  chooseFolder(title: string): Promise<string | null>;
  chooseFile(title: string): Promise<string | null>;
  showInFolder(target: string): Promise<void>;
}

/**
 * Engine entry points the facade calls. Each one is optional: a missing one turns its feature
 * off, with the reason shown in the UI.
 */
export interface EngineHooks {
  inspectModel?: (dir: string) => Promise<EngineModelInfo>;
  estimateTraining?: (model: EngineModelInfo, config: TrainConfig, options: { backend?: string; examplesPerEpoch: number }) => EngineEstimate;
  exportPeft?: (options: { adapterDir: string; destination: string; card: ExportCard }) => Promise<void>;
  exportMerged?: (options: { adapterDir: string; modelPath: string; destination: string; card: ExportCard }) => Promise<void>;
  exportGguf?: (options: { adapterDir: string; modelPath: string; destination: string; card: ExportCard }) => Promise<void>;
  generate?: (options: { modelPath: string; adapterDir?: string; prompt: string; maxNewTokens: number }) => Promise<string>;
  selectBackend?: () => Promise<BackendInfo>;
  qlora?: boolean;
}

/** The run card of an export, without the library versions the engine adds. */
export type ExportCard = Omit<RunCard, 'versions'>;

export interface StudioOptions {
  appDataDir: string;
  host: 'electron' | 'web';
  appVersion: string;
  logger: Logger;
  logFile?: string;
  /** Folder with `demo-model/` and `demo-data/`. */
  resourcesDir: string;
  /** Starts a training worker; undefined when the worker is not built. */
  createTransport?: () => WorkerTransport;
  /** Reason shown when `createTransport` is undefined and training is off. */
  trainingUnavailableReason?: string;
  dialogs?: HostDialogs;
  engine?: EngineHooks;
  /** Extra versions to show (electron, chrome). */
  versions?: Record<string, string>;
  /** Marks runs left running by a crash as interrupted; only the single app instance may. */
  recoverInterrupted?: boolean;
}

const ENGINE_PENDING = 'this build has no engine entry point for it';

export class Studio implements StudioApi {
  readonly store: RunStore;
  readonly jobs: JobManager | undefined;
  private readonly datasetService: DatasetService;
  private readonly emitter = new EventEmitter();
  private readonly progress = new Map<string, ProgressInfo>();
  /** Backend each run trained on, read from the job manager's final log line. */
  private readonly backends = new Map<string, string>();
  private readonly options: StudioOptions;
  private readonly engine: EngineHooks;
  private backendInfo: Promise<BackendInfo> | undefined;

  private constructor(options: StudioOptions, store: RunStore) {
    this.options = options;
    this.engine = options.engine ?? defaultEngineHooks();
    this.store = store;
    this.datasetService = new DatasetService(options.appDataDir, store);
    this.emitter.setMaxListeners(0);

    if (options.createTransport) {
      this.jobs = new JobManager({ store, createTransport: options.createTransport, logger: options.logger });
      this.forwardJobEvents(this.jobs);
    }
  }

  /** Opens the run store in `appDataDir` (creating it) and wires the job manager. */
  static open(options: StudioOptions): Studio {
    const store = RunStore.open(options.appDataDir);
    if (options.recoverInterrupted) {
      for (const run of store.markInterruptedOnStartup()) {
        options.logger.warn(`Run ${run.id} was left unfinished by the previous session; marked interrupted`);
      }
    }
    return new Studio(options, store);
  }

  /** Subscribes to one event; returns the function that unsubscribes. */
  on<E extends StudioEventName>(event: E, listener: (payload: StudioEvents[E]) => void): Unsubscribe {
    this.emitter.on(event, listener);
    return () => this.emitter.off(event, listener);
  }

  /** Listens to every event, for transports that forward them all (IPC, server-sent events). */
  onAny(listener: <E extends StudioEventName>(event: E, payload: StudioEvents[E]) => void): Unsubscribe {
    const names: StudioEventName[] = ['run-updated', 'run-removed', 'run-metrics', 'run-progress', 'run-log', 'dataset-progress', 'export-progress'];
    const unsubscribes = names.map((name) => this.on(name, (payload) => listener(name, payload)));
    return () => unsubscribes.forEach((unsubscribe) => unsubscribe());
  }

  private emit<E extends StudioEventName>(event: E, payload: StudioEvents[E]): void {
    this.emitter.emit(event, payload);
  }

  /** Stops every worker (they checkpoint on cancel) and closes the database. */
  async close(): Promise<void> {
    await this.jobs?.shutdown();
    this.store.close();
  }

  // -------------------------------------------------------------------------------------------
  // Models

  readonly models: StudioApi['models'] = {
    inspect: async ({ path: dir }) => {
      const inspect = this.engine.inspectModel;
      if (!inspect) throw unavailable('Reading model folders', ENGINE_PENDING);
      const info: ModelInfo = await inspect(dir);
      this.store.upsertModel({ path: info.path, name: info.name, architecture: info.architecture, parameterCount: info.parameterCount });
      return info;
    },
    recent: async () =>
      this.store
        .listModels()
        .map((model): ModelEntry => ({ path: model.path, name: model.name, architecture: model.architecture, lastUsedAt: model.addedAt }))
        .filter((entry) => existsSync(entry.path)),
    chooseFolder: async () => (this.options.dialogs ? this.options.dialogs.chooseFolder('Choose a Hugging Face model folder') : null),
  };

  // -------------------------------------------------------------------------------------------
  // Datasets

  readonly datasets: StudioApi['datasets'] = {
    import: (request) => this.importDataset(request),
    list: async () => this.datasetService.list().map((record) => toDatasetSummary(record)),
    get: async ({ id }) => toDatasetDetail(this.datasetService.get(id)),
    preview: (request) => this.previewDataset(request),
    remove: async ({ id }) => {
      await this.datasetService.remove(id);
      this.options.logger.info(`Deleted dataset ${id}`);
    },
    chooseFile: async () => (this.options.dialogs ? this.options.dialogs.chooseFile('Choose a dataset file') : null),
  };

  private async importDataset(request: ImportDatasetRequest): Promise<DatasetDetail> {
    const tokenizer = request.modelPath ? await this.tryLoadTokenizer(request.modelPath) : undefined;
    this.options.logger.info(`Importing dataset ${request.path}`);
    const imported = await this.datasetService.import(request.path, {
      ...(request.name ? { name: request.name } : {}),
      ...(tokenizer ? { tokenizer } : {}),
      onProgress: (progress) => this.emit('dataset-progress', progress),
    });
    this.options.logger.info(`Imported dataset ${imported.id}: ${imported.rowsKept} rows kept, ${imported.rowsSkipped} skipped`);
    return toDatasetDetail(imported);
  }

  private async tryLoadTokenizer(modelPath: string): Promise<Tokenizer | undefined> {
    try {
      return await loadTokenizer(modelPath);
    } catch (error) {
      this.options.logger.warn(`No tokenizer from ${modelPath}; lengths are counted in characters: ${toErrorPayload(error).message}`);
      return undefined;
    }
  }

  /**
   * Renders the first rows as the trainer encodes them. With a model, each example is encoded
   * with its tokenizer and split where the labels switch between -100 and a target. Without
   * one, prompt and completion fields are shown as stored.
   */
  private async previewDataset(request: PreviewRequest): Promise<DatasetPreview> {
    const record = this.datasetService.get(request.id);
    const limit = request.limit ?? 5;
    const tokenizer = request.modelPath ? await this.tryLoadTokenizer(request.modelPath) : undefined;

    const examples: PreviewExample[] = [];
    for await (const normalized of readNormalized(record.storedPath)) {
      if (examples.length >= limit) break;
      const index = examples.length;
      if (!tokenizer) {
        examples.push({ index, segments: segmentsWithoutTokenizer(normalized) });
        continue;
      }
      const encoded = encodeRecord(normalized, tokenizer, { trainOnPrompt: request.trainOnPrompt ?? false });
      if (!encoded.ok) {
        examples.push({ index, segments: [{ text: `(not encodable: ${encoded.message})`, trained: false }] });
        continue;
      }
      examples.push({ index, tokens: encoded.length, segments: segmentTokens(encoded.example.input_ids, encoded.example.labels, tokenizer) });
    }
    return { datasetId: record.id, ...(tokenizer && request.modelPath ? { tokenizer: path.basename(request.modelPath) } : {}), examples };
  }

  // -------------------------------------------------------------------------------------------
  // Runs

  readonly runs: StudioApi['runs'] = {
    estimate: (request) => this.estimate(request.config),
    start: async ({ config }) => {
      const jobs = this.requireJobs();
      const prepared = this.prepareConfig(config);
      const run = jobs.start(prepared, { datasetId: prepared.datasetId ?? null });
      return this.toSummary(run);
    },
    pause: async ({ id }) => this.toSummary(this.requireJobs().pause(id)),
    resume: async ({ id }) => this.toSummary(this.requireJobs().resume(id)),
    cancel: async ({ id }) => this.toSummary(this.requireJobs().cancel(id)),
    list: async () => this.store.listRuns().map((run) => this.toSummary(run)),
    get: async ({ id }) => this.runDetail(id),
    rename: async ({ id, name }) => this.notify(this.store.renameRun(id, name)),
    setTags: async ({ id, tags }) => this.notify(this.store.setTags(id, [...new Set(tags)])),
    remove: async ({ id }) => this.removeRun(id),
    generate: (request) => this.generate(request),
  };

  /** Points the worker at the stored copy of the dataset, which it reads without SQLite. */
  private prepareConfig(config: TrainConfig): TrainConfig {
    if (config.method === 'qlora' && !this.engine.qlora) throw unavailable('QLoRA training', ENGINE_PENDING);
    if (!config.datasetId) return config;
    const dataset = this.store.getDataset(config.datasetId);
    return { ...config, datasetPath: dataset.storedPath };
  }

  private async estimate(config: TrainConfig): Promise<TrainingEstimate> {
    const estimateTraining = this.engine.estimateTraining;
    const inspect = this.engine.inspectModel;
    if (!estimateTraining || !inspect) throw unavailable('The memory and time estimate', ENGINE_PENDING);
    const model = await inspect(config.modelPath);
    const examples = config.datasetId ? this.store.getDataset(config.datasetId).rowsKept : 1000;
    const backend = this.backendInfo ? (await this.backendInfo).chosen : undefined;
    const estimate = estimateTraining(model, config, { ...(backend ? { backend } : {}), examplesPerEpoch: Math.max(1, Math.round(examples * (1 - config.validationSplit))) });
    return toApiEstimate(estimate, backend);
  }

  private async runDetail(id: string): Promise<RunDetail> {
    const run = this.store.getRun(id);
    const events = this.store.listEvents(id, { limit: 500 });
    const progress = this.progress.get(id);
    for (const event of events) this.rememberBackend(id, event.message);
    return {
      run: this.toSummary(run),
      config: run.config,
      metrics: this.store.getMetrics(id).map(({ runId: _runId, ...metrics }) => metrics),
      events: events.map((event) => ({ time: event.time, level: event.level, message: event.message })),
      artifacts: this.store.listArtifacts(id).map(
        (artifact): ArtifactEntry => ({
          id: String(artifact.id),
          kind: artifact.kind,
          path: artifact.path,
          ...(artifact.step !== null ? { step: artifact.step } : {}),
          ...(artifact.sizeBytes !== null ? { sizeBytes: artifact.sizeBytes } : {}),
          createdAt: artifact.createdAt,
        }),
      ),
      ...(progress ? { progress } : {}),
      ...readRunResult(run.runDir),
    };
  }

  /** Deletes the run's rows, then its folder; only a folder inside `<appDataDir>/runs` is removed. */
  private async removeRun(id: string): Promise<void> {
    const runDir = this.store.deleteRun(id);
    const runsRoot = path.resolve(this.options.appDataDir, 'runs');
    if (path.dirname(path.resolve(runDir)) === runsRoot) await rm(runDir, { recursive: true, force: true });
    this.progress.delete(id);
    this.backends.delete(id);
    this.options.logger.info(`Deleted run ${id} and ${runDir}`);
    this.emit('run-removed', { id });
  }

  private async generate(request: GenerateRequest): Promise<GenerationResult> {
    const generate = this.engine.generate;
    if (!generate) throw unavailable('Sample generation', ENGINE_PENDING);
    const run = this.store.getRun(request.id);
    const adapterDir = this.adapterDir(run);
    const maxNewTokens = request.maxNewTokens ?? 64;
    const base = await generate({ modelPath: run.modelPath, prompt: request.prompt, maxNewTokens });
    const adapted = await generate({ modelPath: run.modelPath, adapterDir, prompt: request.prompt, maxNewTokens });
    return { prompt: request.prompt, base, adapted };
  }

  // -------------------------------------------------------------------------------------------
  // Exports

  readonly exports: StudioApi['exports'] = {
    start: (request) => this.exportRun(request),
    chooseDestination: async () => (this.options.dialogs ? this.options.dialogs.chooseFolder('Choose where to export') : null),
    showInFolder: async ({ path: target }) => {
      if (!this.options.dialogs) {
        throw new StudioError('INVALID_ARGUMENT', `Cannot open ${target} from the web UI.`, 'Open the path shown in a file manager on the machine running the server.');
      }
      await this.options.dialogs.showInFolder(target);
    },
  };

  /**
   * Writes the export to a temporary `<destination>.partial-<pid>-<random>` folder and renames it
   * into place when complete, so a failed export never leaves a half-written folder under the
   * requested name. The rename never replaces a non-empty folder, so when two exports race for
   * one destination, the second fails with EXPORT_FAILED and the first stays intact.
   */
  private async exportRun(request: ExportRequest): Promise<ExportResult> {
    const run = this.store.getRun(request.runId);
    const adapterDir = this.adapterDir(run);
    const destination = path.resolve(request.destination);
    const partial = `${destination}.partial-${process.pid}-${randomBytes(6).toString('hex')}`;
    const report = (fraction: number, message: string) => this.emit('export-progress', { runId: run.id, kind: request.kind, fraction, message });

    this.options.logger.info(`Run ${run.id}: exporting ${request.kind} to ${destination}`);
    try {
      await assertExportDestinationFree(destination);
      report(0, 'Preparing');
      await mkdir(path.dirname(destination), { recursive: true });
      const card = this.runCard(run);
      if (request.kind === 'peft') {
        const exportPeft = this.engine.exportPeft;
        if (!exportPeft) throw unavailable('Adapter export', ENGINE_PENDING);
        report(0.2, 'Copying the adapter and writing the run card');
        await exportPeft({ adapterDir, destination: partial, card });
      } else if (request.kind === 'gguf') {
        const exportGguf = this.engine.exportGguf;
        if (!exportGguf) throw unavailable('GGUF export', ENGINE_PENDING);
        report(0.2, 'Writing the llama.cpp LoRA file');
        await exportGguf({ adapterDir, modelPath: run.modelPath, destination: partial, card });
      } else {
        const exportMerged = this.engine.exportMerged;
        if (!exportMerged) throw unavailable('Merged export', ENGINE_PENDING);
        report(0.1, 'Merging the adapter into the base weights');
        await exportMerged({ adapterDir, modelPath: run.modelPath, destination: partial, card });
      }
      report(0.95, 'Moving into place');
      await moveExportIntoPlace(partial, destination);
      report(1, 'Done');
    } catch (error) {
      try {
        await rm(partial, { recursive: true, force: true });
      } catch (cleanupError) {
        this.options.logger.warn(`Run ${run.id}: could not remove the temporary export folder ${partial}`, cleanupError);
      }
      const payload = toErrorPayload(error);
      this.options.logger.error(`Run ${run.id}: export to ${destination} failed: ${payload.message}`);
      if (error instanceof StudioError && error.code !== 'INTERNAL') throw error;
      throw new StudioError('EXPORT_FAILED', `Export of run ${run.id} to ${destination} failed: ${payload.message}`, 'Check that the folder is writable and the disk has space.');
    }
    this.store.addArtifact({ runId: run.id, kind: request.kind === 'peft' ? 'adapter' : request.kind, path: destination, step: run.steps, sizeBytes: measure(destination) });
    this.options.logger.info(`Run ${run.id}: exported ${request.kind} to ${destination}`);
    return { runId: run.id, kind: request.kind, path: destination, files: await listFiles(destination) };
  }

  private runCard(run: RunRecord): ExportCard {
    const dataset = run.datasetId ? this.findDataset(run.datasetId) : undefined;
    return {
      runId: run.id,
      name: run.name,
      baseModel: run.modelPath,
      method: run.method,
      ...(dataset ? { datasetSha256: dataset.sha256, datasetName: dataset.name } : {}),
      seed: run.config.seed,
      config: run.config,
      finalMetrics: { steps: run.steps, finalLoss: run.finalLoss, bestValLoss: run.bestValLoss },
      createdAt: new Date().toISOString(),
    };
  }

  /** Returns the adapter folder the worker reported at the end of the run. */
  private adapterDir(run: RunRecord): string {
    const adapter = this.store.listArtifacts(run.id, 'adapter').find((artifact) => existsSync(path.join(artifact.path, 'adapter_config.json')));
    if (!adapter) {
      throw new StudioError('NOT_FOUND', `Run "${run.id}" has no adapter folder (status ${run.status}).`, 'Export and generation need a completed run; resume or retrain it.');
    }
    return adapter.path;
  }

  // -------------------------------------------------------------------------------------------
  // System

  readonly system: StudioApi['system'] = {
    info: async () => this.systemInfo(),
    backend: async () => {
      const select = this.engine.selectBackend;
      if (!select) throw unavailable('The backend report', ENGINE_PENDING);
      this.backendInfo ??= select();
      return this.backendInfo;
    },
  };

  private systemInfo(): SystemInfo {
    const unavailableReasons: SystemInfo['unavailable'] = {};
    const demoModelPath = path.join(this.options.resourcesDir, 'demo-model');
    const demoDatasetPath = findDemoDataset(path.join(this.options.resourcesDir, 'demo-data'));
    const hasDemoModel = existsSync(path.join(demoModelPath, 'config.json'));
    const capabilities: Capabilities = {
      dialogs: Boolean(this.options.dialogs),
      inspectModel: Boolean(this.engine.inspectModel),
      training: Boolean(this.jobs),
      estimate: Boolean(this.engine.estimateTraining && this.engine.inspectModel),
      generate: Boolean(this.engine.generate),
      export: Boolean(this.jobs),
      qlora: Boolean(this.engine.qlora),
      demoModel: hasDemoModel && Boolean(this.engine.inspectModel),
      demoDataset: Boolean(demoDatasetPath),
    };
    if (!capabilities.dialogs) unavailableReasons.dialogs = 'the web UI has no native dialogs; type paths instead';
    if (!capabilities.inspectModel) unavailableReasons.inspectModel = `reading model folders: ${ENGINE_PENDING}`;
    if (!capabilities.training) unavailableReasons.training = this.options.trainingUnavailableReason ?? 'the training worker is not built';
    if (!capabilities.estimate) unavailableReasons.estimate = ENGINE_PENDING;
    if (!capabilities.generate) unavailableReasons.generate = ENGINE_PENDING;
    if (!capabilities.export) unavailableReasons.export = 'training is not available, so there is nothing to export';
    if (!capabilities.qlora) unavailableReasons.qlora = '4-bit quantization is not in the engine yet';
    if (!capabilities.demoModel) unavailableReasons.demoModel = hasDemoModel ? 'reading model folders is not available yet' : `no demo model in ${demoModelPath}`;
    if (!capabilities.demoDataset) unavailableReasons.demoDataset = `no sample dataset in ${path.join(this.options.resourcesDir, 'demo-data')}`;

    return {
      appVersion: this.options.appVersion,
      appDataDir: this.options.appDataDir,
      ...(this.options.logFile ? { logFile: this.options.logFile } : {}),
      host: this.options.host,
      versions: { node: process.versions.node, tfjs: packageVersion('@tensorflow/tfjs-core'), ...this.options.versions },
      platform: `${process.platform}-${process.arch}`,
      capabilities,
      unavailable: unavailableReasons,
      ...(capabilities.demoModel ? { demoModelPath } : {}),
      ...(demoDatasetPath ? { demoDatasetPath } : {}),
    };
  }

  // -------------------------------------------------------------------------------------------
  // Events and records

  private forwardJobEvents(jobs: JobManager): void {
    jobs.on('run-updated', (run) => this.notify(run));
    jobs.on('metrics', (runId, metrics) => this.emit('run-metrics', { runId, metrics }));
    jobs.on('progress', (runId, progress) => {
      this.progress.set(runId, progress);
      this.emit('run-progress', { runId, progress });
    });
    jobs.on('log', (line: RunLogLine) => {
      this.rememberBackend(line.runId, line.message);
      this.emit('run-log', { runId: line.runId, event: { time: line.time, level: line.level, message: line.message } });
    });
  }

  // NOTE: the run store keeps no backend column, so the backend comes from the job manager's
  // closing log line ("Run completed after N steps ... on backend wasm.").
  private rememberBackend(runId: string, message: string): void {
    const match = /on backend ([\w-]+)\.?$/.exec(message);
    if (match) this.backends.set(runId, match[1]);
  }

  private notify(run: RunRecord): RunSummary {
    const summary = this.toSummary(run);
    this.emit('run-updated', summary);
    return summary;
  }

  private toSummary(run: RunRecord): RunSummary {
    const dataset = run.datasetId ? this.findDataset(run.datasetId) : undefined;
    const backend = this.backends.get(run.id);
    const end = run.finishedAt ? Date.parse(run.finishedAt) : Date.now();
    return {
      id: run.id,
      name: run.name,
      modelPath: run.modelPath,
      modelName: path.basename(run.modelPath),
      ...(run.datasetId ? { datasetId: run.datasetId } : {}),
      ...(dataset ? { datasetName: dataset.name } : {}),
      method: run.method,
      status: run.status,
      tags: run.tags,
      step: run.steps,
      ...(run.totalSteps !== null ? { totalSteps: run.totalSteps } : {}),
      ...(run.finalLoss !== null ? { finalLoss: run.finalLoss } : {}),
      ...(run.bestValLoss !== null ? { bestValLoss: run.bestValLoss } : {}),
      ...(backend ? { backend } : {}),
      createdAt: run.createdAt,
      ...(run.startedAt ? { startedAt: run.startedAt } : {}),
      ...(run.finishedAt ? { finishedAt: run.finishedAt } : {}),
      ...(run.startedAt ? { durationMs: Math.max(0, end - Date.parse(run.startedAt)) } : {}),
      ...(run.error ? { error: run.error } : {}),
    };
  }

  private findDataset(id: string): DatasetRecord | undefined {
    try {
      return this.store.getDataset(id);
    } catch {
      return undefined;
    }
  }

  private requireJobs(): JobManager {
    if (!this.jobs) throw unavailable('Training', this.options.trainingUnavailableReason ?? 'the training worker is not built');
    return this.jobs;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function unavailable(feature: string, reason: string): StudioError {
  return new StudioError('INTERNAL', `${feature} is not available: ${reason}.`, 'Update LoRA Studio to a build that includes it.');
}

function toDatasetSummary(record: DatasetRecord): DatasetSummary {
  return {
    id: record.id,
    name: record.name,
    sourcePath: record.sourcePath,
    format: record.format,
    schema: record.schema,
    rows: record.rowsKept,
    sizeBytes: measure(record.storedPath) ?? 0,
    hash: record.sha256,
    createdAt: record.createdAt,
  };
}

function toDatasetDetail(record: DatasetRecord): DatasetDetail {
  return { ...toDatasetSummary(record), report: record.report as DatasetReport };
}

function segmentsWithoutTokenizer(record: NormalizedRecord): PreviewExample['segments'] {
  switch (record.kind) {
    case 'text':
      return [{ text: record.text, trained: true }];
    case 'prompt_completion':
      return [
        { text: record.prompt, trained: false },
        { text: record.completion, trained: true },
      ];
    case 'chat':
      return record.messages.map((message) => ({ text: `${message.role}: ${message.content}\n`, trained: message.role === 'assistant' }));
    case 'tokens':
      return [{ text: `(${record.input_ids.length} token ids)`, trained: true }];
  }
}

/**
 * Splits tokens where the label switches between -100 (masked) and a target. Each segment's text
 * is the difference of two prefix decodes, so characters split across tokens stay whole.
 */
function segmentTokens(inputIds: number[], labels: number[], tokenizer: { decode(ids: readonly number[]): string }): PreviewExample['segments'] {
  const segments: PreviewExample['segments'] = [];
  let start = 0;
  let decodedSoFar = '';
  for (let index = 1; index <= inputIds.length; index += 1) {
    const boundary = index === inputIds.length || (labels[index] !== -100) !== (labels[start] !== -100);
    if (!boundary) continue;
    const decoded = tokenizer.decode(inputIds.slice(0, index));
    segments.push({ text: decoded.slice(decodedSoFar.length), trained: labels[start] !== -100 });
    decodedSoFar = decoded;
    start = index;
  }
  return segments;
}

function toApiEstimate(estimate: EngineEstimate, backend: string | undefined): TrainingEstimate {
  const { memory } = estimate;
  const mb = (bytes: number) => (bytes < 2 ** 20 ? `${Math.max(1, Math.round(bytes / 1024))} KB` : `${(bytes / 2 ** 20).toFixed(0)} MB`);
  return {
    trainableParameters: estimate.trainableParameters,
    totalParameters: estimate.totalParameters,
    memoryBytes: memory.totalBytes,
    totalSteps: estimate.totalSteps,
    seconds: estimate.estimatedSeconds,
    notes: [
      `Memory: weights ${mb(memory.weightsBytes)}, LoRA ${mb(memory.loraBytes)}, optimizer ${mb(memory.optimizerBytes)}, activations ${mb(memory.activationsBytes)}.`,
      `Time assumes ${(estimate.assumedFlops / 1e9).toFixed(0)} GFLOP/s on the ${backend ?? 'wasm'} backend.`,
    ],
  };
}


function measure(target: string): number | null {
  try {
    const stats = statSync(target);
    if (!stats.isDirectory()) return stats.size;
    return readdirSync(target).reduce((total, name) => total + (measure(path.join(target, name)) ?? 0), 0);
  } catch {
    return null;
  }
}

async function listFiles(folder: string): Promise<ExportResult['files']> {
  const entries = await readdir(folder, { withFileTypes: true });
  const files: ExportResult['files'] = [];
  for (const entry of entries) {
    if (!entry.isFile()) continue;
    files.push({ name: entry.name, sizeBytes: (await stat(path.join(folder, entry.name))).size });
  }
  return files.sort((a, b) => a.name.localeCompare(b.name));
}

const DATASET_EXTENSIONS = ['.jsonl', '.json', '.csv', '.tsv', '.parquet', '.txt'];

/** Finds the demo's chat dataset: `chat-storyteller.jsonl`, else the first data file by name (never the prompt list). */
function findDemoDataset(folder: string): string | undefined {
  if (!existsSync(folder)) return undefined;
  const names = readdirSync(folder).sort();
  const file = names.includes(DEMO_DATASET_FILE)
    ? DEMO_DATASET_FILE
    : names.find((name) => name !== 'sample-prompts.json' && DATASET_EXTENSIONS.includes(path.extname(name).toLowerCase()));
  return file ? path.join(folder, file) : undefined;
}

const DEMO_DATASET_FILE = 'chat-storyteller.jsonl';

function packageVersion(name: string): string {
  try {
    const require = createRequire(import.meta.url);
    return (require(`${name}/package.json`) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/**
 * Returns the engine's entry points: model inspection, the estimate, export, generation and the
 * backend report. Tests and hosts may replace any of them.
 */
export function defaultEngineHooks(): EngineHooks {
  return {
    inspectModel: async (dir) => inspectModel(dir),
    estimateTraining: (model, config, options) => estimateTraining(model, config, options.backend, options.examplesPerEpoch),
    exportPeft: async ({ adapterDir, destination, card }) => {
      exportPeftAdapter(adapterDir, destination, { ...card, versions: libraryVersions() });
    },
    exportGguf: async ({ adapterDir, modelPath, destination, card }) => {
      exportGgufAdapter(adapterDir, modelPath, destination, { ...card, versions: libraryVersions() });
    },
    exportMerged: async ({ adapterDir, modelPath, destination, card }) => {
      await selectBackend();
      exportMergedModel(modelPath, adapterDir, destination, { ...card, versions: libraryVersions() });
    },
    generate: generateText,
    selectBackend: async () => selectBackend(),
    qlora: true,
  };
}

/**
 * Generates from `prompt` with the base model, or with the adapter applied when `adapterDir`
 * is given, greedily so base and adapted outputs differ only by the adapter.
 * NOTE: this runs tfjs in the calling process (main or the web bridge) and blocks it while it
 * generates. Sending generation to the training worker would keep the process responsive.
 */
async function generateText(options: { modelPath: string; adapterDir?: string; prompt: string; maxNewTokens: number }): Promise<string> {
  await selectBackend();
  const tokenizer = await loadTokenizer(options.modelPath);
  const { model } = loadModel(options.modelPath);
  try {
    if (options.adapterDir) loadAdapter(model, options.adapterDir);
    const promptIds = tokenizer.encode(options.prompt);
    const eos = tokenizer.eosTokenId !== undefined ? [tokenizer.eosTokenId] : [];
    const result = generate(model, promptIds, { maxNewTokens: options.maxNewTokens, temperature: 0, eosTokenIds: eos });
    return tokenizer.decode(result.tokenIds, { skipSpecialTokens: true });
  } finally {
    model.dispose();
  }
}

/** Raises EXPORT_FAILED when `destination` is a file or a folder that is not empty. */
async function assertExportDestinationFree(destination: string): Promise<void> {
  let entries: string[];
  try {
    if (!(await stat(destination)).isDirectory()) {
      throw new StudioError('EXPORT_FAILED', `The destination ${destination} is a file, not a folder.`, 'Choose a new or empty folder.');
    }
    entries = await readdir(destination);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (entries.length > 0) {
    throw new StudioError('EXPORT_FAILED', `The destination ${destination} exists and is not empty.`, 'Choose a new or empty folder.');
  }
}

/**
 * Renames the finished export onto `destination`. An empty folder there is replaced; a folder
 * that another export filled meanwhile is kept and the move fails with EXPORT_FAILED.
 */
async function moveExportIntoPlace(partial: string, destination: string): Promise<void> {
  try {
    await rename(partial, destination);
    return;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') throw destinationTaken(destination);
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EACCES') throw error;
  }

  // Some platforms refuse to rename onto an existing folder even when it is empty. rmdir removes
  // only an empty folder, so a finished export that appeared there is never deleted.
  try {
    await rmdir(destination);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') throw destinationTaken(destination);
    throw error;
  }
  await rename(partial, destination);
}

function destinationTaken(destination: string): StudioError {
  return new StudioError(
    'EXPORT_FAILED',
    `The destination ${destination} was filled by another export while this one was written.`,
    'Choose a new or empty folder and export again.',
  );
}

/**
 * Claims `<appDataDir>/studio.lock` for this process. `owned` is false when another live process
 * (the desktop app or another web bridge) has it, and that process then owns run recovery.
 */
export function acquireDataDirLock(appDataDir: string): { owned: boolean; release(): void } {
  const file = path.join(appDataDir, 'studio.lock');
  mkdirSync(appDataDir, { recursive: true });
  try {
    const holder = Number.parseInt(readFileSync(file, 'utf8'), 10);
    if (Number.isInteger(holder) && holder !== process.pid && isProcessAlive(holder)) return { owned: false, release: () => {} };
  } catch {
    // No lock file yet, or an unreadable one: take it.
  }
  writeFileSync(file, String(process.pid));
  return {
    owned: true,
    release: () => {
      try {
        if (readFileSync(file, 'utf8') === String(process.pid)) unlinkSync(file);
      } catch {
        // Already gone.
      }
    },
  };
}

function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Returns the folder Electron uses as `userData` for this app (`<appData>/lora-studio`), so the
 * desktop app, the web bridge and the CLI share one run store by default.
 */
export function defaultAppDataDir(): string {
  const home = os.homedir();
  if (process.platform === 'win32') return path.join(process.env.APPDATA ?? path.join(home, 'AppData', 'Roaming'), 'lora-studio');
  if (process.platform === 'darwin') return path.join(home, 'Library', 'Application Support', 'lora-studio');
  return path.join(process.env.XDG_CONFIG_HOME ?? path.join(home, '.config'), 'lora-studio');
}

/** Reads the worker's `result.json` (final result and sample generations), when the run wrote one. */
function readRunResult(runDir: string): { result?: RunResult } {
  try {
    return { result: JSON.parse(readFileSync(path.join(runDir, 'result.json'), 'utf8')) as RunResult };
  } catch {
    return {};
  }
}
