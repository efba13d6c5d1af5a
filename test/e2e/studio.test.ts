/**
 * The UI in real Chromium against the web bridge: dataset import with skipped rows, inline
 * validation of the settings form, and (once the demo model is in resources/) the whole flow:
 * train, watch the charts, history, compare, export and delete.
 */
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  callApi,
  ensureBuilt,
  hasChromium,
  hasDemoModel,
  hasWorker,
  launchBrowser,
  screenshot,
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

/** A prompt/completion JSONL with two bad lines: line 3 is not JSON, line 5 has a number as prompt. */
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
      await screenshot(page, 'dataset-skipped-rows');
    }
    await setTheme(page, 'light');
  });

  test.skipIf(!hasFixtureModel)('invalid settings show inline errors and block start', async () => {
    await openModel(FIXTURE_MODEL);
    expect(await page.getByTestId('model-info').textContent()).toContain('GPT2LMHeadModel');
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
      await screenshot(page, 'wizard-settings-invalid');
    }
    await setTheme(page, 'light');

    await page.locator('#lora-r').fill('8');
    await page.locator('#learning-rate').fill('0.0002');
    await page.locator('#max-seq').fill('128');
    await page.getByTestId('target-modules').locator('input').first().check();
    await expect.poll(() => page.getByTestId('field-error').count()).toBe(0);
    expect(await start.isEnabled()).toBe(true);
    await expect.poll(() => page.getByTestId('trainable').textContent()).toMatch(/\d/);
  });

  test.skipIf(!hasDemoModel || !hasWorker)(
    'demo run trains, compares, exports and deletes',
    async () => {
      for (const theme of ['light', 'dark'] as const) {
        await setTheme(page, theme);
        await page.goto(`${bridge.openUrl}#/new/model`);
        await page.getByTestId('demo-model').click();
        await page.getByTestId('model-info').waitFor();
        await screenshot(page, 'wizard-1-model');
      }
      await setTheme(page, 'light');

      await page.getByTestId('next').click();
      await page.getByTestId('demo-dataset').click();
      await page.getByTestId('dataset-report').waitFor();
      await page.getByTestId('example').first().waitFor();
      await screenshot(page, 'wizard-2-dataset');
      await setTheme(page, 'dark');
      await screenshot(page, 'wizard-2-dataset');
      await setTheme(page, 'light');
      await page.getByTestId('next').click();

      await startRun(page, 'first run', '4');
      await screenshot(page, 'wizard-3-settings-before-start');
      const firstId = await waitForCompletion(page, 'first run');
      expect(Number(await page.getByTestId('chart-loss').getAttribute('data-points'))).toBeGreaterThan(0);
      for (const theme of ['light', 'dark'] as const) {
        await setTheme(page, theme);
        await screenshot(page, 'wizard-4-train');
      }
      await setTheme(page, 'light');

      await page.getByTestId('to-result').click();
      await page.getByTestId('final-metrics').waitFor();
      const destination = path.join(workDir, 'exported-adapter');
      await page.getByTestId('export-peft').click();
      await page.locator('#export-destination').fill(destination);
      await page.getByRole('button', { name: 'Export', exact: true }).click();
      await page.getByTestId('export-result').waitFor({ timeout: 120_000 });
      expect(await page.getByTestId('export-path').textContent()).toBe(destination);
      const files = readdirSync(destination);
      expect(files).toContain('adapter_config.json');
      expect(files).toContain('adapter_model.safetensors');
      for (const theme of ['light', 'dark'] as const) {
        await setTheme(page, theme);
        await screenshot(page, 'wizard-5-result');
      }
      await setTheme(page, 'light');

      // A second run with another rank, then both in History and in the comparison.
      await page.goto(`${bridge.openUrl}#/new/settings`);
      await startRun(page, 'second run', '2');
      const secondId = await waitForCompletion(page, 'second run');

      await page.goto(`${bridge.openUrl}#/runs`);
      const table = page.getByTestId('runs-table');
      await table.waitFor();
      expect(await table.locator('tbody tr').count()).toBe(2);
      for (const theme of ['light', 'dark'] as const) {
        await setTheme(page, theme);
        await screenshot(page, 'history');
      }
      await setTheme(page, 'light');
      await page.getByTestId('search').fill('second');
      expect(await table.locator('tbody tr').count()).toBe(1);
      await page.getByTestId('search').fill('');

      await table.locator(`tr[data-run-id="${firstId}"] input[type=checkbox]`).check();
      await table.locator(`tr[data-run-id="${secondId}"] input[type=checkbox]`).check();
      await page.getByTestId('compare').click();
      const diff = page.getByTestId('config-diff');
      await diff.waitFor();
      await expect.poll(() => diff.textContent()).toContain('lora.r');
      expect(Number(await page.getByTestId('compare-loss').getAttribute('data-points'))).toBeGreaterThan(1);
      await screenshot(page, 'compare');

      // Delete the second run: it leaves History and its folder is gone.
      const runDir = path.join(bridge.appDataDir, 'runs', secondId);
      expect(existsSync(runDir)).toBe(true);
      await page.goto(`${bridge.openUrl}#/runs/${secondId}`);
      await page.getByTestId('delete').click();
      await page.getByTestId('confirm').click();
      await page.getByTestId('runs-table').waitFor();
      expect(await page.getByTestId('runs-table').locator('tbody tr').count()).toBe(1);
      expect(existsSync(runDir)).toBe(false);
      const listed = await callApi<{ id: string }[]>(bridge, 'runs', 'list');
      expect(listed.body.value?.map((run) => run.id)).toEqual([firstId]);
    },
    900_000,
  );
});

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
