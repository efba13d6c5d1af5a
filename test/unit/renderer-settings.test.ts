/** Presets of the settings form: what they set, how they are recognised, and context clamping. */
import { createPinia, setActivePinia } from 'pinia';
import { beforeEach, describe, expect, test } from 'vitest';
import { PRESETS, describePreset, matchPreset, presetValues, useSettingsStore } from '../../src/renderer/src/stores/settings';

beforeEach(() => setActivePinia(createPinia()));

describe('settings presets', () => {
  test('default form is the balanced preset', () => {
    expect(useSettingsStore().preset).toBe('balanced');
  });

  test('each preset is recognised after applying it', () => {
    const settings = useSettingsStore();
    for (const name of ['quick', 'quality', 'balanced'] as const) {
      settings.applyPreset(name);
      expect(settings.preset).toBe(name);
    }
  });

  test('changing one field makes the form custom', () => {
    const settings = useSettingsStore();
    settings.applyPreset('quick');
    settings.form.r = 6;
    expect(settings.preset).toBe('custom');
  });

  test('run name and hidden stop field do not break the match', () => {
    const settings = useSettingsStore();
    settings.applyPreset('balanced');
    settings.form.name = 'my run';
    settings.form.maxSteps = 999;
    expect(settings.preset).toBe('balanced');
  });

  test('sequence length is cut to the context length', () => {
    expect(presetValues('quality', 256).maxSeqLength).toBe(256);
    expect(presetValues('quick', 256).maxSeqLength).toBe(256);
    expect(presetValues('quality').maxSeqLength).toBe(1024);
    expect(PRESETS.quality.values.maxSeqLength).toBe(1024);
  });

  test('clamped preset still matches for a short-context model', () => {
    const settings = useSettingsStore();
    settings.contextLength = 256;
    settings.applyPreset('quality');
    expect(settings.form.maxSeqLength).toBe(256);
    expect(matchPreset(settings.form, 256)).toBe('quality');
    expect(matchPreset(settings.form, 0)).toBe('custom');
  });

  test('description lists what the preset sets', () => {
    const text = describePreset(PRESETS.quick.values);
    expect(text).toContain('rank 4');
    expect(text).toContain('alpha 8');
    expect(text).toContain('learning rate 5e-4');
    expect(text).toContain('20 steps');
    expect(text).toContain('constant schedule');
    expect(text).toContain('checkpoint at the end');
    expect(describePreset(PRESETS.quality.values)).toContain('3 epochs');
    expect(describePreset(PRESETS.quality.values)).toContain('accumulation 2');
  });
});
