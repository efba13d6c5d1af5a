/**
 * `datasets`, `runs`, `export` and `backend`: the run history and its artifacts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { StudioError, formatError } from '../shared/errors';
import type { RunRecord } from '../shared/records';
import { selectBackend } from '../engine/backend';
import { exportGgufAdapter, exportMergedModel, exportPeftAdapter, libraryVersions, type RunCard } from '../engine/export';
import { loadTokenizer } from '../engine/tokenizer';
import { formatHelp, numberFlag, parseCommand, requireFlag, stringFlag, type OptionTable } from './args';
import { assertNotLiveElsewhere, openContext } from './context';
import { formatDuration } from './progress';
import { printImportSummary, trainWithContext } from './train';

const DATA_DIR: OptionTable = {
  'data-dir': { type: 'string', help: 'app data folder with studio.db (default: LORA_STUDIO_HOME or ~/.local/share/lora-studio)' },
  json: { type: 'boolean', help: 'print JSON on stdout' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
};

const DATASET_OPTIONS: OptionTable = {
  name: { type: 'string', help: 'display name (default: the file name)' },
  schema: { type: 'string', help: 'schema instead of detection: text, prompt_completion, alpaca, messages, sharegpt, tokens' },
  model: { type: 'string', help: 'model folder whose tokenizer measures token lengths' },
  'max-seq-length': { type: 'string', help: 'count examples longer than this as truncated (default 512)' },
  ...DATA_DIR,
};

export async function datasetsCommand(argv: string[]): Promise<number> {
  const [action, ...rest] = argv;
  const { values, positionals } = parseCommand(rest, DATASET_OPTIONS);
  if (values.help || !action) {
    process.stdout.write(formatHelp('lora-studio datasets import FILE [options] | datasets list', 'Imports a dataset into the app data folder (normalized copy + validation report), or lists them.', DATASET_OPTIONS));
    return action ? 0 : 2;
  }
  const context = openContext(stringFlag(values, 'data-dir'), false);
  try {
    if (action === 'list') {
      const datasets = context.datasets.list();
      if (values.json) process.stdout.write(JSON.stringify(datasets, null, 2) + '\n');
      else printTable(['id', 'name', 'format', 'schema', 'rows kept', 'skipped', 'sha256'], datasets.map((d) => [d.id, d.name, d.format, d.schema, String(d.rowsKept), String(d.rowsSkipped), d.sha256.slice(0, 12)]));
      return 0;
    }
    if (action === 'import') {
      const file = positionals[0];
      if (!file) throw new StudioError('INVALID_ARGUMENT', 'datasets import needs a file.', 'Run: lora-studio datasets import data.jsonl');
      const maxSeqLength = numberFlag(values, 'max-seq-length', { integer: true, min: 1 });
      const modelPath = stringFlag(values, 'model');
      const tokenizer = modelPath ? await loadTokenizer(path.resolve(modelPath)) : undefined;
      const dataset = await context.datasets.import(path.resolve(file), {
        name: stringFlag(values, 'name'),
        schemaOverride: stringFlag(values, 'schema') as never,
        tokenizer,
        maxSeqLength,
      });
      if (values.json) process.stdout.write(JSON.stringify(dataset, null, 2) + '\n');
      else {
        printImportSummary(dataset);
        process.stdout.write(`${dataset.id}\n`);
      }
      return 0;
    }
    throw new StudioError('INVALID_ARGUMENT', `Unknown datasets action "${action}".`, 'Use datasets import FILE or datasets list.');
  } finally {
    await context.close();
  }
}

const RUNS_OPTIONS: OptionTable = {
  status: { type: 'string', help: 'list only runs with this status' },
  search: { type: 'string', help: 'list only runs whose name or model contains this text' },
  yes: { type: 'boolean', help: 'delete without asking (runs delete)' },
  ...DATA_DIR,
};

export async function runsCommand(argv: string[]): Promise<number> {
  const [action, ...rest] = argv;
  const { values, positionals } = parseCommand(rest, RUNS_OPTIONS);
  if (values.help || !action) {
    process.stdout.write(formatHelp('lora-studio runs list | runs show RUN [--json] | runs resume RUN | runs delete RUN --yes', 'Lists, shows, resumes or deletes recorded runs.', RUNS_OPTIONS));
    return action ? 0 : 2;
  }
  const context = openContext(stringFlag(values, 'data-dir'), false);
  try {
    switch (action) {
      case 'list': {
        const runs = context.store.listRuns({ status: stringFlag(values, 'status') as never, search: stringFlag(values, 'search') });
        if (values.json) process.stdout.write(JSON.stringify(runs, null, 2) + '\n');
        else printTable(['id', 'name', 'status', 'method', 'steps', 'final loss', 'best val', 'duration', 'created'], runs.map(runRow));
        return 0;
      }
      case 'show': {
        const run = context.store.getRun(requirePositional(positionals, 'runs show RUN'));
        const metrics = context.store.getMetrics(run.id);
        if (values.json) {
          process.stdout.write(JSON.stringify({ ...run, metrics, artifacts: context.store.listArtifacts(run.id) }, null, 2) + '\n');
          return 0;
        }
        process.stdout.write(`${run.id}  ${run.name}  ${run.status}\nmodel ${run.modelPath}\nfolder ${run.runDir}\n`);
        if (run.error) process.stdout.write(`error ${formatError(run.error)}\n`);
        printTable(['step', 'loss', 'val loss', 'lr', 'grad norm', 'tok/s'], metrics.map((m) => [String(m.step), m.loss.toFixed(4), m.valLoss?.toFixed(4) ?? '', m.lr.toExponential(2), m.gradNorm.toFixed(3), m.tokensPerSecond.toFixed(0)]));
        return 0;
      }
      case 'resume': {
        const id = requirePositional(positionals, 'runs resume RUN');
        assertNotLiveElsewhere(context, id, 'resumed');
        context.jobs.resume(id);
        const run = await context.jobs.whenStopped(id);
        process.stdout.write(`run ${run.id}: ${run.status} after ${run.steps ?? 0} steps\n`);
        return run.status === 'completed' ? 0 : 1;
      }
      case 'delete': {
        const id = requirePositional(positionals, 'runs delete RUN --yes');
        if (!values.yes) throw new StudioError('INVALID_ARGUMENT', `Deleting run ${id} removes its checkpoints and exports.`, 'Add --yes to confirm.');
        assertNotLiveElsewhere(context, id, 'deleted');
        const runDir = context.store.deleteRun(id);
        fs.rmSync(runDir, { recursive: true, force: true });
        process.stdout.write(`deleted ${id}\n`);
        return 0;
      }
      default:
        throw new StudioError('INVALID_ARGUMENT', `Unknown runs action "${action}".`, 'Use runs list, runs show RUN, runs resume RUN or runs delete RUN --yes.');
    }
  } finally {
    await context.close();
  }
}

const EXPORT_OPTIONS: OptionTable = {
  format: { type: 'string', help: 'peft (adapter folder), merged (full model folder) or gguf (llama.cpp LoRA file) (default peft)' },
  out: { type: 'string', help: 'destination folder; must not exist or be empty' },
  ...DATA_DIR,
};

export async function exportCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand(argv, EXPORT_OPTIONS);
  if (values.help) {
    process.stdout.write(formatHelp('lora-studio export RUN --format peft|merged|gguf --out DIR', 'Exports a run\'s adapter as a PEFT folder or a llama.cpp GGUF file, or merges it into a full Hugging Face model.', EXPORT_OPTIONS));
    return 0;
  }
  const context = openContext(stringFlag(values, 'data-dir'), false);
  try {
    const run = context.store.getRun(requirePositional(positionals, 'export RUN --format peft --out DIR'));
    const format = stringFlag(values, 'format') ?? 'peft';
    if (format !== 'peft' && format !== 'merged' && format !== 'gguf') {
      throw new StudioError('INVALID_ARGUMENT', `--format must be peft, merged or gguf. Received: --format ${JSON.stringify(format)}.`, 'Use --format peft.');
    }
    const out = path.resolve(requireFlag(values, 'out', 'Pass --out with the destination folder.'));
    const adapterDir = path.join(run.runDir, 'adapter');
    if (!fs.existsSync(path.join(adapterDir, 'adapter_model.safetensors'))) {
      throw new StudioError('EXPORT_FAILED', `Run ${run.id} (${run.status}) has no final adapter in ${adapterDir}.`, 'Export a completed or cancelled run, or resume this one first.');
    }
    const card = runCard(run, run.datasetId ? context.store.getDataset(run.datasetId).sha256 : undefined);
    if (format === 'merged') await selectBackend();
    const written =
      format === 'peft' ? exportPeftAdapter(adapterDir, out, card) : format === 'gguf' ? exportGgufAdapter(adapterDir, run.modelPath, out, card) : exportMergedModel(run.modelPath, adapterDir, out, card);
    context.store.addArtifact({ runId: run.id, kind: format === 'peft' ? 'adapter' : format, path: written });
    process.stdout.write(values.json ? JSON.stringify({ path: written, format }) + '\n' : `${written}\n`);
    return 0;
  } finally {
    await context.close();
  }
}

export async function backendCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(argv, { json: DATA_DIR.json, help: DATA_DIR.help });
  const report = await selectBackend();
  if (values.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  else {
    process.stdout.write(`backend: ${report.chosen}${report.simd !== undefined ? ` (SIMD ${report.simd ? 'on' : 'off'})` : ''}\n`);
    if (report.nativeMatMul) process.stdout.write(`  native matmul: ${report.nativeMatMul.enabled ? 'on' : 'off'}, ${report.nativeMatMul.detail}\n`);
    for (const attempt of report.attempts.filter((a) => !a.ok)) {
      process.stdout.write(`  ${attempt.name}: ${attempt.reason}${attempt.fix ? `\n    fix: ${attempt.fix}` : ''}\n`);
    }
  }
  return 0;
}

export function runCard(run: RunRecord, datasetSha256?: string): RunCard {
  return {
    runId: run.id,
    name: run.name,
    baseModel: run.modelPath,
    method: run.config.method,
    datasetSha256,
    seed: run.config.seed,
    config: run.config,
    finalMetrics: { loss: run.finalLoss, best_val_loss: run.bestValLoss, steps: run.steps },
    versions: libraryVersions(),
    createdAt: new Date().toISOString(),
  };
}

function runRow(run: RunRecord): string[] {
  const duration = run.startedAt && run.finishedAt ? formatDuration((Date.parse(run.finishedAt) - Date.parse(run.startedAt)) / 1000) : '';
  return [run.id, run.name, run.status, run.config.method, String(run.steps ?? 0), run.finalLoss?.toFixed(4) ?? '', run.bestValLoss?.toFixed(4) ?? '', duration, run.createdAt.slice(0, 19).replace('T', ' ')];
}

function requirePositional(positionals: string[], usage: string): string {
  if (!positionals[0]) throw new StudioError('INVALID_ARGUMENT', 'A run id is required.', `Run: lora-studio ${usage} (ids are in lora-studio runs list).`);
  return positionals[0];
}

function printTable(header: string[], rows: string[][]): void {
  if (rows.length === 0) {
    process.stdout.write('(none)\n');
    return;
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (c ?? '').padEnd(widths[i])).join('  ').trimEnd();
  process.stdout.write([line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n') + '\n');
}

export { trainWithContext };
