/**
 * Exports to awkward destinations through the Studio facade (what the web bridge and the app
 * call), and how Node's own errors travel as error payloads.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StudioError, isErrorPayload, toErrorPayload, type ErrorCode } from '../../src/shared/errors';
import { silentLogger } from '../../src/services/jobs';
import { Studio, defaultEngineHooks } from '../../src/services/studio';
import { catchStudioErrorAsync, makeScratch, openTestStudio, seedCompletedRun } from '../helpers/adversarial';

const KNOWN_CODES: readonly ErrorCode[] = [
  'INVALID_ARGUMENT', 'NOT_FOUND', 'DATASET_PARSE', 'DATASET_EMPTY', 'MODEL_UNSUPPORTED', 'MODEL_FILES_MISSING', 'MODEL_FORMAT',
  'TOKENIZER_MISSING', 'ADAPTER_MISMATCH', 'SHAPE_MISMATCH', 'OUT_OF_MEMORY', 'NAN_LOSS', 'WORKER_EXITED', 'EXPORT_FAILED',
  'RUN_STATE', 'STORE_UNREADABLE', 'UNAUTHORIZED', 'INTERNAL',
];

const scratch = makeScratch('exports');
let studio: Studio;

beforeAll(() => {
  studio = openTestStudio(path.join(scratch, 'app'));
});
afterAll(async () => {
  await studio.close();
  fs.rmSync(scratch, { recursive: true, force: true });
});

function readRunCard(folder: string): { runId: string } {
  return JSON.parse(fs.readFileSync(path.join(folder, 'run_card.json'), 'utf8')) as { runId: string };
}

describe('error payloads', () => {
  it('StudioError keeps code, message and hint', () => {
    const payload = toErrorPayload(new StudioError('EXPORT_FAILED', 'Writing /x failed.', 'Free space.'));
    expect(payload).toEqual({ code: 'EXPORT_FAILED', message: 'Writing /x failed.', hint: 'Free space.' });
  });

  // Node's system errors have a string `code` ('EISDIR', 'EACCES'...) and `message` too, but
  // isErrorPayload accepts only plain objects with a known ErrorCode, so they become INTERNAL
  // with the Node code kept in an enumerable message.
  it('Node system error becomes a known code with its message', () => {
    let systemError: unknown;
    try {
      fs.readFileSync(scratch);
    } catch (error) {
      systemError = error;
    }
    const payload = toErrorPayload(systemError);
    expect(KNOWN_CODES).toContain(payload.code);
    expect(JSON.parse(JSON.stringify(payload)).message).toContain('EISDIR');
  });

  it('plain payload objects still pass through', () => {
    const payload = { code: 'RUN_STATE' as const, message: 'Run "r" is running.' };
    expect(isErrorPayload(payload)).toBe(true);
    expect(toErrorPayload(payload)).toBe(payload);
  });
});

describe('export destinations', () => {
  it('non-empty destination is rejected and kept', async () => {
    const run = seedCompletedRun(studio.store, 'llama-gqa-untied', 'keeps-folder');
    const destination = path.join(scratch, 'non-empty');
    fs.mkdirSync(destination);
    fs.writeFileSync(path.join(destination, 'notes.txt'), 'precious');

    const error = await catchStudioErrorAsync(() => studio.exports.start({ runId: run.id, kind: 'peft', destination }));
    expect(error.code).toBe('EXPORT_FAILED');
    expect(error.message).toContain(destination);
    expect(fs.readdirSync(destination)).toEqual(['notes.txt']);
    expect(fs.readFileSync(path.join(destination, 'notes.txt'), 'utf8')).toBe('precious');
  });

  it('second export to the same folder keeps the first', async () => {
    const run = seedCompletedRun(studio.store, 'llama-gqa-untied', 'first-export');
    const destination = path.join(scratch, 'first-export');
    await studio.exports.start({ runId: run.id, kind: 'peft', destination });
    const error = await catchStudioErrorAsync(() => studio.exports.start({ runId: run.id, kind: 'gguf', destination }));
    expect(error.code).toBe('EXPORT_FAILED');
    expect(fs.existsSync(path.join(destination, 'adapter_model.safetensors'))).toBe(true);
  });

  it('export of a run without adapter is NOT_FOUND', async () => {
    const run = seedCompletedRun(studio.store, 'llama-gqa-untied', 'no-adapter');
    fs.rmSync(path.join(run.runDir, 'adapter'), { recursive: true });
    const error = await catchStudioErrorAsync(() => studio.exports.start({ runId: run.id, kind: 'peft', destination: path.join(scratch, 'never') }));
    expect(error.code).toBe('NOT_FOUND');
    expect(error.message).toContain(run.id);
    expect(fs.existsSync(path.join(scratch, 'never'))).toBe(false);
  });

  // A destination that is a file must fail as EXPORT_FAILED naming it, not as Node's ENOTDIR,
  // which reaches HTTP callers without a message.
  it('destination that is a file is EXPORT_FAILED', async () => {
    const run = seedCompletedRun(studio.store, 'llama-gqa-untied', 'onto-file');
    const destination = path.join(scratch, 'a-file');
    fs.writeFileSync(destination, 'keep me');
    const error = await catchStudioErrorAsync(() => studio.exports.start({ runId: run.id, kind: 'peft', destination }));
    expect(error.code).toBe('EXPORT_FAILED');
    expect(error.message).toContain(destination);
  });

  // Here the export fails inside its try block, and the cleanup of the temporary folder fails with
  // ENOTDIR too (rm with force ignores only ENOENT). Neither error may escape unwrapped.
  it('destination under a file is EXPORT_FAILED', async () => {
    const run = seedCompletedRun(studio.store, 'llama-gqa-untied', 'under-file');
    const parent = path.join(scratch, 'parent-file');
    fs.writeFileSync(parent, 'x');
    const destination = path.join(parent, 'adapter');
    const error = await catchStudioErrorAsync(() => studio.exports.start({ runId: run.id, kind: 'gguf', destination }));
    expect(error.code).toBe('EXPORT_FAILED');
    expect(error.message).toContain(destination);
  });

  // Two exports to one new folder (two browser tabs, a double click) both pass the emptiness check
  // at the start. The final rename never replaces a non-empty folder, so the one that finishes
  // second fails and the first one's finished export stays. Each export also has its own
  // temporary folder, so exports started in the same millisecond cannot share one.
  it('second concurrent export to one folder is rejected', async () => {
    const gates: (() => void)[] = [];
    const engine = defaultEngineHooks();
    const gated = Studio.open({
      appDataDir: path.join(scratch, 'gated-app'),
      host: 'web',
      appVersion: '0.0.0',
      logger: silentLogger,
      resourcesDir: path.join(scratch, 'no-resources'),
      engine: {
        ...engine,
        exportPeft: async (options) => {
          await new Promise<void>((resolve) => gates.push(resolve));
          await engine.exportPeft!(options);
        },
      },
    });
    try {
      const first = seedCompletedRun(gated.store, 'llama-gqa-untied', 'race-first');
      const second = seedCompletedRun(gated.store, 'llama-gqa-untied', 'race-second');
      const destination = path.join(scratch, 'race');
      const firstExport = gated.exports.start({ runId: first.id, kind: 'peft', destination });
      const secondExport = gated.exports.start({ runId: second.id, kind: 'peft', destination });
      secondExport.catch(() => {});
      while (gates.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));

      gates[0]();
      expect((await firstExport).runId).toBe(first.id);
      gates[1]();
      const error = await catchStudioErrorAsync(() => secondExport);
      expect(error.code).toBe('EXPORT_FAILED');
      expect(readRunCard(destination).runId).toBe(first.id);
    } finally {
      await gated.close();
    }
  });
});
