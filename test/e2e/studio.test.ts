/**
 * The UI in real Chromium against the web bridge: dataset import with skipped rows, inline
 * validation of the settings form, and (once the demo model is in resources/) the whole flow:
 * train, watch the charts, history, compare, export and delete. Every screenshot, wide and at
 * 1024×700, also runs the accessibility checks of `findAccessibilityProblems`.
 */
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  callApi,
  captureScreen,
  ensureBuilt,
  hasChromium,
  hasDemoModel,
  hasWorker,
  launchBrowser,
  setTheme,
  startBridge,
  tempDir,
  type Bridge,
} from './harness';

const FIXTURE_MODEL = path.resolve(__dirname, '..', '..', '..', 'shared', 'fixtures', 'models', 'gpt2-tiny');
const hasFixtureModel = existsSync(path.join(FIXTURE_MODEL, 'config.json'));

let bridge: Bridge;
let browser: Awaited<ReturnType<typeof launchBrowser>>;
let page: Page;
let workDir: string;

/** Writes a prompt/completion JSONL with two bad lines: line 3 is not JSON, line 5 has a number as prompt. */
function writeDatasetWithBadLines(file: string): void {
  const lines: string[] = [];
  for (let index = 0; index < 12; index += 1) {
    if (index === 2) lines.push('{"prompt": "broken", ');
    else if (index === 4) lines.push(JSON.stringify({ prompt: 42, completion: 'number prompt' }));
    else lines.push(JSON.stringify({ prompt: `Question ${index}: what is ${index} + 1?`, completion: ` ${index + 1}` }));
  }
  writeFileSync(file, `${lines.join('\n')}\n`);
}

async function importDataset(file: string): Promise<void> {
  await page.goto(`${bridge.openUrl}#/new/dataset`);
  await page.locator('#dataset-path').fill(file);
  await page.getByRole('button', { name: 'Import', exact: true }).click();
  await page.getByTestId('dataset-report').waitFor();
}

async function openModel(folder: string): Promise<void> {
  await page.goto(`${bridge.openUrl}#/new/model`);
  await page.locator('#model-path').fill(folder);
  await page.getByRole('button', { name: 'Open', exact: true }).click();
  await page.getByTestId('model-info').waitFor();
}

describe.skipIf(!hasChromium)('LoRA Studio in Chromium', () => {
  beforeAll(async () => {
    ensureBuilt();
    workDir = tempDir('studio-e2e-');
    bridge = await startBridge(path.join(workDir, 'app-data'));
    browser = await launchBrowser();
    page = browser.page;
  }, 600_000);

  afterAll(async () => {
    await browser?.close();
    await bridge?.stop();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  test('api rejects requests without the token', async () => {
    const response = await fetch(`${bridge.base}/api/system/info`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(response.status).toBe(401);
    const page = await fetch(`${bridge.base}/`);
    expect(page.status).toBe(401);
  });

  test('system page shows the backend report', async () => {
    await page.goto(`${bridge.openUrl}#/system`);
    await page.getByTestId('backend-chosen').waitFor({ timeout: 60_000 });
    expect(['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu']).toContain(await page.getByTestId('backend-chosen').textContent());
    expect(await page.getByTestId('app-data').textContent()).toBe(bridge.appDataDir);
    for (const theme of ['light', 'dark'] as const) {
      await setTheme(page, theme);
      expect(await captureScreen(page, 'system')).toEqual([]);
    }
    await setTheme(page, 'light');
  });

  test('history empty state explains next step', async () => {
    await page.goto(`${bridge.openUrl}#/runs`);
    await page.getByText('No runs yet').waitFor();
    for (const theme of ['light', 'dark'] as const) {
      await setTheme(page, theme);
      expect(await captureScreen(page, 'history-empty')).toEqual([]);
    }
    await setTheme(page, 'light');
  });

  test('dataset with bad lines shows the skipped rows', async () => {
    const file = path.join(workDir, 'with-bad-lines.jsonl');
    writeDatasetWithBadLines(file);
    await importDataset(file);

    await expect.poll(() => page.getByTestId('rows-kept').textContent()).toBe('10');
    expect(await page.getByTestId('rows-skipped').textContent()).toBe('2');
    const skipped = page.getByTestId('skipped-rows');
    const rows = skipped.locator('tbody tr');
    expect(await rows.count()).toBe(2);
    expect(await rows.nth(0).locator('td').first().textContent()).toBe('3');
    expect(await rows.nth(0).textContent()).toContain('invalid_json');
    expect(await rows.nth(1).locator('td').first().textContent()).toBe('5');

    // The preview shows the prompt masked and the completion trained.
    await page.getByTestId('example').first().waitFor();
    expect(await page.getByTestId('example').first().locator('.masked').first().textContent()).toContain('Question 0');
    expect(await page.getByTestId('example').first().locator('.trained').first().textContent()).toContain('1');
    for (const theme of ['light', 'dark'] as const) {
      await setTheme(page, theme);
      expect(await captureScreen(page, 'dataset-skipped-rows')).toEqual([]);
    }
    await setTheme(page, 'light');
  });

  test('missing dataset file shows the error and its fix', async () => {
    const missing = path.join(workDir, 'no-such-folder', `${'a-long-folder-name-'.repeat(8)}train.jsonl`);
    await page.goto(`${bridge.openUrl}#/new/dataset`);
    await page.locator('#dataset-path').fill(missing);
    await page.getByRole('button', { name: 'Import', exact: true }).click();
    await page.getByTestId('error').waitFor();
    expect(await page.getByTestId('error-message').textContent()).toContain(missing);
    expect(await page.getByTestId('error-hint').textContent()).toContain('How to fix');
    for (const theme of ['light', 'dark'] as const) {
      await setTheme(page, theme);
      expect(await captureScreen(page, 'dataset-import-error')).toEqual([]);
    }
    await setTheme(page, 'light');
  });

  test.skipIf(!hasFixtureModel)('invalid settings show inline errors and block start', async () => {
    await openModel(FIXTURE_MODEL);
    expect(await page.getByTestId('model-info').textContent()).toContain('GPT2LMHeadModel');
    for (const theme of ['light', 'dark'] as const) {
      await setTheme(page, theme);
      expect(await captureScreen(page, 'wizard-1-model')).toEqual([]);
    }
    await setTheme(page, 'light');
    const file = path.join(workDir, 'valid.jsonl');
    writeFileSync(file, Array.from({ length: 20 }, (_, index) => JSON.stringify({ text: `Sample line number ${index}.` })).join('\n'));
    await importDataset(file);

    await page.goto(`${bridge.openUrl}#/new/settings`);
    const start = page.getByTestId('start');
    await start.waitFor();
    expect(await start.isEnabled()).toBe(true);

    await page.locator('#lora-r').fill('0');
    await page.locator('#learning-rate').fill('');
    await page.locator('#max-seq').fill('100000');
    await expect.poll(() => page.getByTestId('field-error').count()).toBe(3);
    const errors = await page.getByTestId('field-error').allTextContents();
    expect(errors).toContain('Rank must be at least 1');
    expect(errors).toContain('Learning rate must be a number');
    expect(errors.some((text) => text.includes("model's context length"))).toBe(true);
    expect(await start.isDisabled()).toBe(true);
    expect(await page.getByTestId('form-invalid').textContent()).toContain('Fix 3 fields');

    // Unticking every target module is an error too.
    for (const box of await page.getByTestId('target-modules').locator('input:checked').all()) await box.uncheck();
    await expect.poll(() => page.getByTestId('field-error').allTextContents()).toContain('Choose at least one target module');

    for (const theme of ['light', 'dark'] as const) {
      await setTheme(page, theme);
      expect(await captureScreen(page, 'wizard-settings-invalid')).toEqual([]);
    }
    await setTheme(page, 'light');

    await page.locator('#lora-r').fill('8');
    await page.locator('#learning-rate').fill('0.0002');
    await page.locator('#max-seq').fill('128');
    await page.getByTestId('target-modules').locator('input').first().check();
    await expect.poll(() => page.getByTestId('field-error').count()).toBe(0);
    expect(await start.isEnabled()).toBe(true);
    await expect.poll(() => page.getByTestId('trainable').textContent()).toMatch(/\d/);

    // Keyboard: Tab goes from the name to the method group to the rank, with a visible ring.
    await page.locator('#run-name').focus();
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => (document.activeElement as HTMLInputElement | null)?.name)).toBe('method');
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('lora-r');
    expect(await page.evaluate(() => getComputedStyle(document.activeElement!).outlineStyle)).toBe('solid');

    // Arrow keys move the "Stop after" choice, which swaps the epochs field for max steps.
    await page.locator('input[name=stop-by][value=epochs]').focus();
    await page.keyboard.press('ArrowRight');
    await page.locator('#max-steps').waitFor();
    await page.keyboard.press('ArrowLeft');
    await page.locator('#epochs').waitFor();
  });

  test.skipIf(!hasFixtureModel || !hasWorker)(
    'fixture model trains, compares, exports and deletes',
    async () => {
      const data = path.join(workDir, 'token-ids.jsonl');
      // Pre-tokenized rows: the fixture model ships no tokenizer, and its vocabulary has 320 ids.
      writeFileSync(data, Array.from({ length: 40 }, (_, row) => JSON.stringify({ input_ids: Array.from({ length: 24 }, (_, i) => (row * 7 + i * 13) % 320) })).join('\n'));
      await openModel(FIXTURE_MODEL);
      await importDataset(data);
      await page.getByTestId('next').click();
      // The demo test, when it runs, overwrites these screenshots with the demo model's.
      await runFullFlow('fixture', true);
    },
    900_000,
  );

  test.skipIf(!hasDemoModel || !hasWorker)(
    'demo run trains, compares, exports and deletes',
    async () => {
      for (const theme of ['light', 'dark'] as const) {
        await setTheme(page, theme);
        await page.goto(`${bridge.openUrl}#/new/model`);
        await page.getByTestId('demo-model').click();
        await page.getByTestId('model-info').waitFor();
        expect(await captureScreen(page, 'wizard-1-model')).toEqual([]);
      }
      await setTheme(page, 'light');

      await page.getByTestId('next').click();
      await page.getByTestId('demo-dataset').click();
      await page.getByTestId('dataset-report').waitFor();
      await page.getByTestId('example').first().waitFor();
      expect(await captureScreen(page, 'wizard-2-dataset')).toEqual([]);
      await setTheme(page, 'dark');
      expect(await captureScreen(page, 'wizard-2-dataset')).toEqual([]);
      await setTheme(page, 'light');
      await page.getByTestId('next').click();
      await runFullFlow('demo', true);
    },
    900_000,
  );
});

/**
 * From the settings step: train two runs, export the first as a PEFT adapter, find both in
 * History, compare them, and delete the second. Screenshots are taken when `shots` is set.
 */
async function runFullFlow(prefix: string, shots: boolean): Promise<void> {
  const shoot = async (name: string) => {
    if (!shots) return;
    for (const theme of ['light', 'dark'] as const) {
      await setTheme(page, theme);
      expect(await captureScreen(page, name)).toEqual([]);
    }
    await setTheme(page, 'light');
  };
  const before = (await callApi<{ id: string }[]>(bridge, 'runs', 'list')).body.value?.length ?? 0;

  await shoot('wizard-3-settings');
  await startRun(page, `${prefix} first`, '4');
  const firstId = await waitForCompletion(page, `${prefix} first`);
  expect(Number(await page.getByTestId('chart-loss').getAttribute('data-points'))).toBeGreaterThan(0);
  expect(Number(await page.getByTestId('chart-throughput').getAttribute('data-points'))).toBeGreaterThan(0);
  await shoot('wizard-4-train');

  await page.getByTestId('to-result').click();
  await page.getByTestId('final-metrics').waitFor();
  const destination = path.join(workDir, `${prefix}-adapter`);
  await page.getByTestId('export-peft').click();
  await page.locator('#export-destination').fill(destination);
  await page.getByRole('button', { name: 'Export', exact: true }).click();
  await page.getByTestId('export-result').waitFor({ timeout: 120_000 });
  expect(await page.getByTestId('export-path').textContent()).toBe(destination);
  const files = readdirSync(destination);
  expect(files).toContain('adapter_config.json');
  expect(files).toContain('adapter_model.safetensors');
  await shoot('wizard-5-result');

  // A second run with another rank, then both in History and in the comparison.
  await page.goto(`${bridge.openUrl}#/new/settings`);
  await startRun(page, `${prefix} second`, '2');
  const secondId = await waitForCompletion(page, `${prefix} second`);

  // A long run name must be clipped in History, not widen the page.
  const longName = `${prefix} first ${'with-a-long-descriptive-name-'.repeat(5)}end`;
  expect((await callApi(bridge, 'runs', 'rename', { id: firstId, name: longName })).status).toBe(200);

  await page.goto(`${bridge.openUrl}#/runs`);
  const table = page.getByTestId('runs-table');
  await table.waitFor();
  expect(await table.locator('tbody tr').count()).toBe(before + 2);
  await shoot('history');
  await page.getByTestId('search').fill(`${prefix} second`);
  await expect.poll(() => table.locator('tbody tr').count()).toBe(1);
  await page.getByTestId('search').fill('');

  await table.locator(`tr[data-run-id="${firstId}"] input[type=checkbox]`).check();
  await table.locator(`tr[data-run-id="${secondId}"] input[type=checkbox]`).check();
  await page.getByTestId('compare').click();
  const diff = page.getByTestId('config-diff');
  await diff.waitFor();
  await expect.poll(() => diff.textContent()).toContain('lora.r');
  await expect.poll(async () => Number(await page.getByTestId('compare-loss').getAttribute('data-points'))).toBeGreaterThan(1);
  await shoot('compare');

  // Delete the second run: it leaves History and its folder is gone.
  const runDir = path.join(bridge.appDataDir, 'runs', secondId);
  expect(existsSync(runDir)).toBe(true);
  await page.goto(`${bridge.openUrl}#/runs/${secondId}`);
  // Escape closes the dialog without deleting and gives focus back to the Delete button.
  await page.getByTestId('delete').click();
  await page.getByTestId('confirm').waitFor();
  await page.keyboard.press('Escape');
  await expect.poll(() => page.locator('dialog[open]').count()).toBe(0);
  expect(await page.evaluate(() => document.activeElement?.getAttribute('data-test'))).toBe('delete');
  expect(existsSync(runDir)).toBe(true);
  await page.getByTestId('delete').click();
  await page.getByTestId('confirm').click();
  await page.getByTestId('runs-table').waitFor();
  await expect.poll(() => page.getByTestId('runs-table').locator('tbody tr').count()).toBe(before + 1);
  expect(existsSync(runDir)).toBe(false);
  const listed = await callApi<{ id: string }[]>(bridge, 'runs', 'list');
  expect(listed.body.value?.map((run) => run.id)).toContain(firstId);
  expect(listed.body.value?.map((run) => run.id)).not.toContain(secondId);
}

async function startRun(page: Page, name: string, rank: string): Promise<void> {
  await page.getByRole('button', { name: 'Quick test' }).click();
  await page.locator('#run-name').fill(name);
  await page.locator('#lora-r').fill(rank);
  await page.getByTestId('stop-by-steps').click();
  await page.locator('#max-steps').fill('6');
  await page.locator('#eval-steps').fill('3');
  await page.getByTestId('start').click();
  await page.getByTestId('run-progress').waitFor();
}

/** Waits until the run on the Train step is completed and returns its id. */
async function waitForCompletion(page: Page, name: string): Promise<string> {
  await page.getByTestId('chart-loss').locator('canvas').waitFor({ timeout: 300_000 });
  await page.getByTestId('status').filter({ hasText: /completed|failed/ }).waitFor({ timeout: 600_000 });
  expect(await page.getByTestId('status').first().textContent()).toBe('completed');
  const runs = await callApi<{ id: string; name: string }[]>(bridge, 'runs', 'list');
  const run = runs.body.value?.find((entry) => entry.name === name);
  expect(run).toBeDefined();
  return run!.id;
}
