/**
 * The bundled CLI as a careless user drives it: killed mid-run, pointed at a damaged database or
 * a file as its data folder, and given flags the parser lets through. Every failure is one line
 * without a stack trace, and an interrupted run resumes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RunStore } from '../../src/services/store';
import { STACK_FRAME, makeScratch, openTestStudio, runCli, seedCompletedRun, spawnCli, writeTokenRows } from '../helpers/adversarial';
import { modelDir } from '../helpers/fixtures';

const scratch = makeScratch('cli');
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

const data = writeTokenRows(path.join(scratch, 'rows.jsonl'), 20, 16);
const TRAIN_ARGS = ['train', '--model', modelDir('llama-gqa-untied'), '--data', data, '--batch-size', '2', '--max-seq-length', '16', '--validation-split', '0', '--eval-steps', '0'];

function listRuns(dataDir: string): { id: string; status: string; steps: number }[] {
  const result = runCli(['runs', 'list', '--json'], dataDir);
  expect(result.code).toBe(0);
  return JSON.parse(result.stdout) as { id: string; status: string; steps: number }[];
}

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  for (let attempt = 0; attempt < 1200; attempt++) {
    if (condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * True once the run store records a checkpoint, which is what `runs resume` starts from. The
 * store is opened only after a checkpoint folder exists, so the CLI has created its database.
 */
function checkpointRecorded(dataDir: string): boolean {
  const runs = path.join(dataDir, 'runs');
  const written = fs.existsSync(runs) && fs.readdirSync(runs).some((id) => {
    const checkpoints = path.join(runs, id, 'checkpoints');
    return fs.existsSync(checkpoints) && fs.readdirSync(checkpoints).length > 0;
  });
  if (!written) return false;
  const store = RunStore.open(dataDir);
  try {
    return store.listRuns().some((run) => store.listCheckpoints(run.id).length > 0);
  } finally {
    store.close();
  }
}

describe('killed training', () => {
  it('SIGKILL leaves an interrupted run that resumes', async () => {
    const dataDir = path.join(scratch, 'sigkill');
    const child = spawnCli([...TRAIN_ARGS, '--max-steps', '120', '--save-steps', '10'], dataDir);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    await waitFor(() => checkpointRecorded(dataDir), 'the first recorded checkpoint');
    child.kill('SIGKILL');
    await exited;

    const [killed] = listRuns(dataDir);
    expect(killed.status).toBe('interrupted');

    const resumed = runCli(['runs', 'resume', killed.id], dataDir);
    expect(resumed.stderr).not.toMatch(STACK_FRAME);
    expect(resumed.stdout).toContain(`run ${killed.id}: completed after 120 steps`);
    expect(resumed.code).toBe(0);
    expect(listRuns(dataDir)[0]).toMatchObject({ id: killed.id, status: 'completed', steps: 120 });
  });

  it('SIGINT then SIGKILL keeps the run resumable', async () => {
    const dataDir = path.join(scratch, 'sigint');
    const child = spawnCli([...TRAIN_ARGS, '--max-steps', '120', '--save-steps', '10'], dataDir);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    await waitFor(() => checkpointRecorded(dataDir), 'the first recorded checkpoint');
    child.kill('SIGINT');
    await new Promise((resolve) => setTimeout(resolve, 20));
    child.kill('SIGKILL');
    await exited;

    const [run] = listRuns(dataDir);
    expect(['cancelled', 'interrupted']).toContain(run.status);
    const resumed = runCli(['runs', 'resume', run.id], dataDir);
    expect(resumed.code).toBe(0);
    expect(listRuns(dataDir)[0]).toMatchObject({ status: 'completed', steps: 120 });
  });
});

describe('damaged data folders', () => {
  it('garbage studio.db is one line and unchanged', () => {
    const dataDir = path.join(scratch, 'garbage-db');
    fs.mkdirSync(dataDir, { recursive: true });
    const garbage = Buffer.alloc(5000);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 131 + 7) % 256;
    fs.writeFileSync(path.join(dataDir, 'studio.db'), garbage);

    const result = runCli(['runs', 'list'], dataDir);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`STORE_UNREADABLE: The run database ${path.join(dataDir, 'studio.db')}`);
    expect(result.stderr).not.toMatch(STACK_FRAME);
    expect(fs.readFileSync(path.join(dataDir, 'studio.db')).equals(garbage)).toBe(true);
  });

  // mkdirSync on a path that is a file fails with EEXIST. The CLI reports it as STORE_UNREADABLE
  // naming the path, with a hint about --data-dir, instead of Node's raw error.
  it('data folder that is a file is STORE_UNREADABLE', () => {
    const file = path.join(scratch, 'data-dir-file');
    fs.writeFileSync(file, 'x');
    const result = runCli(['runs', 'list'], file);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('STORE_UNREADABLE');
    expect(result.stderr).toContain(file);
  });
});

describe('flags the parser lets through', () => {
  it('--lr -1 asks for the = form', () => {
    const result = runCli([...TRAIN_ARGS, '--lr', '-1'], path.join(scratch, 'negative-lr'));
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("'--lr=-XYZ'");
    expect(result.stderr).not.toMatch(STACK_FRAME);
  });

  // Number("abc") is NaN, which would let the import succeed with a truncation count of 0.
  it('datasets import --max-seq-length abc is rejected', () => {
    const result = runCli(['datasets', 'import', data, '--max-seq-length', 'abc'], path.join(scratch, 'import-flag'));
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--max-seq-length');
  });

  // Node 20's recursive mkdirSync never returns for a path directly under /proc (mkdir gives
  // ENOENT although the parent exists, and the recursion retries forever). The export creates
  // its folders one level at a time, so it ends in EXPORT_FAILED instead of hanging.
  it.skipIf(process.platform !== 'linux')('export under /proc fails instead of hanging', async () => {
    const dataDir = path.join(scratch, 'proc-export');
    const studio = openTestStudio(dataDir);
    const run = seedCompletedRun(studio.store, 'llama-gqa-untied', 'proc');
    await studio.close();

    const result = runCli(['export', run.id, '--format', 'peft', '--out', '/proc/lora-studio-export-test'], dataDir, 5000);
    expect(result.signal).toBeNull();
    expect(result.stderr).toContain('EXPORT_FAILED');
  });
});

describe('listing never changes history', () => {
  it('runs list on a fresh folder creates only the database', () => {
    const dataDir = path.join(scratch, 'fresh');
    expect(listRuns(dataDir)).toEqual([]);
    const store = RunStore.open(dataDir);
    try {
      expect(store.listRuns()).toEqual([]);
    } finally {
      store.close();
    }
  });
});
