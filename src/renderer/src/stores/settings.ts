import { defineStore } from 'pinia';
import { trainConfigSchema, type ModelInfo, type TrainingEstimate } from '../../../shared/api';
import type { ErrorPayload } from '../../../shared/errors';
import { DEFAULT_TRAIN_CONFIG, attentionBytesFromMiB, resolveGradientCheckpointing, type TrainConfig } from '../../../shared/train-config';
import { studio } from '../api';
import { asError, formatLearningRate } from '../format';

export type StopBy = 'epochs' | 'steps';
export type PresetName = 'quick' | 'balanced' | 'quality';

/** The settings form. Numbers may be '' while the user types, so fields are loosely typed. */
export interface SettingsForm {
  name: string;
  method: TrainConfig['method'];
  r: number | '';
  loraAlpha: number | '';
  loraDropout: number | '';
  targetModules: string[];
  learningRate: number | '';
  schedule: TrainConfig['schedule'];
  warmupSteps: number | '';
  stopBy: StopBy;
  epochs: number | '';
  maxSteps: number | '';
  batchSize: number | '';
  gradientAccumulationSteps: number | '';
  maxSeqLength: number | '';
  seed: number | '';
  evalSteps: number | '';
  saveSteps: number | '';
  validationSplit: number | '';
  trainOnPrompt: boolean;
  /** The user's choice; null until they change the checkbox, so the method's default applies. */
  gradientCheckpointing: boolean | null;
  /** Attention memory budget in MiB, or '' for no limit. */
  maxAttentionMiB: number | '';
}

export const PRESETS: Record<PresetName, { label: string; description: string; values: Partial<SettingsForm> }> = {
  quick: {
    label: 'Quick test',
    description: '20 steps at rank 4: checks that everything runs.',
    values: { r: 4, loraAlpha: 8, learningRate: 5e-4, stopBy: 'steps', maxSteps: 20, batchSize: 2, gradientAccumulationSteps: 1, maxSeqLength: 256, warmupSteps: 0, evalSteps: 10, saveSteps: 0, schedule: 'constant' },
  },
  balanced: {
    label: 'Balanced',
    description: 'One epoch at rank 8, the PEFT defaults.',
    values: { r: 8, loraAlpha: 16, learningRate: 2e-4, stopBy: 'epochs', epochs: 1, batchSize: 4, gradientAccumulationSteps: 1, maxSeqLength: 512, warmupSteps: 0, evalSteps: 50, saveSteps: 100, schedule: 'linear' },
  },
  quality: {
    label: 'Thorough',
    description: 'Three epochs at rank 16 with cosine decay.',
    values: { r: 16, loraAlpha: 32, learningRate: 1e-4, stopBy: 'epochs', epochs: 3, batchSize: 4, gradientAccumulationSteps: 2, maxSeqLength: 1024, warmupSteps: 50, evalSteps: 100, saveSteps: 200, schedule: 'cosine' },
  },
};

/** "rank 4 · alpha 8 · learning rate 5e-4 · 20 steps …": what applying a preset sets. */
export function describePreset(values: Partial<SettingsForm>): string {
  const parts: string[] = [];
  if (values.r !== undefined) parts.push(`rank ${values.r}`);
  if (values.loraAlpha !== undefined) parts.push(`alpha ${values.loraAlpha}`);
  if (typeof values.learningRate === 'number') parts.push(`learning rate ${formatLearningRate(values.learningRate)}`);
  if (values.schedule !== undefined) parts.push(`${values.schedule} schedule`);
  if (values.warmupSteps !== undefined) parts.push(`${values.warmupSteps} warmup steps`);
  if (values.stopBy === 'steps' && values.maxSteps !== undefined) parts.push(`${values.maxSteps} steps`);
  if (values.stopBy === 'epochs' && values.epochs !== undefined) parts.push(`${values.epochs} ${values.epochs === 1 ? 'epoch' : 'epochs'}`);
  if (values.batchSize !== undefined) parts.push(`batch ${values.batchSize}`);
  if (values.gradientAccumulationSteps !== undefined && values.gradientAccumulationSteps !== 1) {
    parts.push(`accumulation ${values.gradientAccumulationSteps}`);
  }
  if (values.maxSeqLength !== undefined) parts.push(`sequence length ${values.maxSeqLength}`);
  if (values.evalSteps !== undefined) parts.push(values.evalSteps === 0 ? 'no validation' : `validation every ${values.evalSteps} steps`);
  if (values.saveSteps !== undefined) parts.push(values.saveSteps === 0 ? 'checkpoint at the end' : `checkpoint every ${values.saveSteps} steps`);
  return parts.join(' · ');
}

/** Returns a preset's values with the sequence length cut to the context length (0: unknown). */
export function presetValues(name: PresetName, contextLength = 0): Partial<SettingsForm> {
  const values = { ...PRESETS[name].values };
  if (contextLength > 0 && typeof values.maxSeqLength === 'number' && values.maxSeqLength > contextLength) {
    values.maxSeqLength = contextLength;
  }
  return values;
}

/** Returns the preset whose values the form contains, or 'custom' once any of them changed. */
export function matchPreset(form: SettingsForm, contextLength = 0): PresetName | 'custom' {
  for (const name of Object.keys(PRESETS) as PresetName[]) {
    const values = presetValues(name, contextLength);
    const matches = (Object.keys(values) as (keyof SettingsForm)[]).every((key) => {
      // Only the active stop criterion counts: the hidden field keeps its old value.
      if ((key === 'maxSteps' && values.stopBy !== 'steps') || (key === 'epochs' && values.stopBy !== 'epochs')) return true;
      return form[key] === values[key];
    });
    if (matches) return name;
  }
  return 'custom';
}

/** The visible label of each field that validateForm can report, for the error summary. */
export const FIELD_LABELS: Record<string, string> = {
  name: 'Name',
  method: 'Method',
  r: 'Rank (r)',
  loraAlpha: 'Alpha (lora_alpha)',
  loraDropout: 'Dropout',
  targetModules: 'Target modules',
  learningRate: 'Learning rate',
  schedule: 'Schedule',
  warmupSteps: 'Warmup steps',
  epochs: 'Epochs',
  maxSteps: 'Max steps',
  batchSize: 'Batch size',
  gradientAccumulationSteps: 'Gradient accumulation',
  maxSeqLength: 'Max sequence length',
  validationSplit: 'Validation split',
  evalSteps: 'Eval every',
  saveSteps: 'Checkpoint every',
  seed: 'Seed',
  maxAttentionMiB: 'Max attention memory (MiB)',
  model: 'Model',
  dataset: 'Dataset',
};

function defaultForm(): SettingsForm {
  const d = DEFAULT_TRAIN_CONFIG;
  return {
    name: '',
    method: d.method,
    r: d.lora.r,
    loraAlpha: d.lora.loraAlpha,
    loraDropout: d.lora.loraDropout,
    targetModules: [],
    learningRate: d.learningRate,
    schedule: d.schedule,
    warmupSteps: d.warmupSteps,
    stopBy: d.maxSteps > 0 ? 'steps' : 'epochs',
    epochs: d.epochs,
    maxSteps: d.maxSteps > 0 ? d.maxSteps : 100,
    batchSize: d.batchSize,
    gradientAccumulationSteps: d.gradientAccumulationSteps,
    maxSeqLength: d.maxSeqLength,
    seed: d.seed,
    evalSteps: d.evalSteps,
    saveSteps: d.saveSteps,
    validationSplit: d.validationSplit,
    trainOnPrompt: d.trainOnPrompt,
    gradientCheckpointing: null,
    maxAttentionMiB: '',
  };
}

/** Target modules to tick for a newly chosen model: attention projections where it has them. */
export function defaultTargets(linearModules: string[]): string[] {
  for (const preferred of [['q_proj', 'v_proj'], ['c_attn'], ['query_key_value']]) {
    const present = preferred.filter((name) => linearModules.includes(name));
    if (present.length) return present;
  }
  return linearModules.slice(0, 2);
}

const asNumber = (value: number | ''): number => (value === '' ? Number.NaN : value);

/** Builds the request config; fields the user left empty become NaN so validation names them. */
export function buildConfig(form: SettingsForm, modelPath: string, datasetId: string | undefined): TrainConfig {
  const d = DEFAULT_TRAIN_CONFIG;
  return {
    ...d,
    ...(form.name.trim() ? { name: form.name.trim() } : {}),
    modelPath,
    ...(datasetId ? { datasetId } : {}),
    validationSplit: asNumber(form.validationSplit),
    method: form.method,
    lora: {
      ...d.lora,
      r: asNumber(form.r),
      loraAlpha: asNumber(form.loraAlpha),
      loraDropout: asNumber(form.loraDropout),
      targetModules: [...form.targetModules],
    },
    ...(form.method === 'qlora' ? { quant: { quantType: 'nf4', blocksize: 64, doubleQuant: true } } : {}),
    learningRate: asNumber(form.learningRate),
    schedule: form.schedule,
    warmupSteps: asNumber(form.warmupSteps),
    maxSteps: form.stopBy === 'steps' ? asNumber(form.maxSteps) : 0,
    epochs: form.stopBy === 'epochs' ? asNumber(form.epochs) : 1,
    batchSize: asNumber(form.batchSize),
    gradientAccumulationSteps: asNumber(form.gradientAccumulationSteps),
    maxSeqLength: asNumber(form.maxSeqLength),
    seed: asNumber(form.seed),
    evalSteps: asNumber(form.evalSteps),
    saveSteps: asNumber(form.saveSteps),
    trainOnPrompt: form.trainOnPrompt,
    gradientCheckpointing: formGradientCheckpointing(form),
    ...(form.maxAttentionMiB === '' ? {} : { maxAttentionBytes: attentionBytesFromMiB(form.maxAttentionMiB) }),
  };
}

/** Returns the checkbox state: the user's choice, or the method's default until they make one. */
export function formGradientCheckpointing(form: SettingsForm): boolean {
  return resolveGradientCheckpointing(form.method, form.gradientCheckpointing ?? undefined);
}

/** Maps a config path from the schema to the form field that shows its error. */
const FIELD_FOR_PATH: Record<string, keyof SettingsForm | 'model' | 'dataset'> = {
  'lora.r': 'r',
  'lora.loraAlpha': 'loraAlpha',
  'lora.loraDropout': 'loraDropout',
  'lora.targetModules': 'targetModules',
  modelPath: 'model',
  datasetId: 'dataset',
  quant: 'method',
  maxAttentionBytes: 'maxAttentionMiB',
};

/**
 * Validates the form with the same schema main and the web bridge use, plus the checks that
 * need the model: target modules must exist in it, and the sequence length must fit its context.
 */
export function validateForm(
  form: SettingsForm,
  model: ModelInfo | null,
  datasetId: string | undefined,
): Record<string, string> {
  const errors: Record<string, string> = {};
  const parsed = trainConfigSchema.safeParse(buildConfig(form, model?.path ?? '', datasetId));
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const path = issue.path.join('.');
      const prefix = issue.path.length > 2 && issue.path[0] === 'lora' ? 'lora.targetModules' : path;
      const field = FIELD_FOR_PATH[prefix] ?? FIELD_FOR_PATH[path] ?? path;
      if (!errors[field]) errors[field] = issue.message;
    }
  }
  // The schema's cross-field checks run only once every field parses, so repeat them here.
  if (!datasetId) errors.dataset ??= 'Choose a dataset';
  if (form.stopBy === 'steps' && form.maxSteps === 0) errors.maxSteps ??= 'Max steps must be at least 1';
  if (form.stopBy === 'epochs' && form.epochs === 0) errors.epochs ??= 'Set epochs above 0 or max steps above 0';
  if (!model) errors.model = 'Choose a model in step 1';
  if (model) {
    const unknown = form.targetModules.filter((name) => !model.linearModules.includes(name));
    if (unknown.length) errors.targetModules = `Not in this model: ${unknown.join(', ')}`;
    const length = asNumber(form.maxSeqLength);
    if (!errors.maxSeqLength && model.contextLength > 0 && length > model.contextLength) {
      errors.maxSeqLength = `Must be at most ${model.contextLength}, the model's context length`;
    }
  }
  if (errors.epochs && form.stopBy === 'steps') {
    errors.maxSteps = errors.epochs;
    delete errors.epochs;
  }
  return errors;
}

/** The wizard's settings step: form values, presets, inline validation and the estimate. */
export const useSettingsStore = defineStore('settings', {
  state: () => ({
    form: defaultForm(),
    /** Context length of the chosen model, 0 while none is chosen. */
    contextLength: 0,
    estimate: null as TrainingEstimate | null,
    estimateError: null as ErrorPayload | null,
    estimateLoading: false,
    estimateRequest: 0,
  }),
  getters: {
    preset: (state): PresetName | 'custom' => matchPreset(state.form, state.contextLength),
    gradientCheckpointing: (state): boolean => formGradientCheckpointing(state.form),
  },
  actions: {
    /** Records the user's choice, which from then on no longer follows the method. */
    setGradientCheckpointing(enabled: boolean): void {
      this.form.gradientCheckpointing = enabled;
    },
    applyPreset(name: PresetName): void {
      Object.assign(this.form, presetValues(name, this.contextLength));
    },
    /** Called when the model changes: keeps only target modules the new model has. */
    adoptModel(model: ModelInfo): void {
      const kept = this.form.targetModules.filter((name) => model.linearModules.includes(name));
      this.form.targetModules = kept.length ? kept : defaultTargets(model.linearModules);
      this.contextLength = model.contextLength;
      const length = asNumber(this.form.maxSeqLength);
      if (model.contextLength > 0 && length > model.contextLength) this.form.maxSeqLength = model.contextLength;
    },
    reset(): void {
      this.form = defaultForm();
    },
    async refreshEstimate(config: TrainConfig): Promise<void> {
      const request = ++this.estimateRequest;
      this.estimateLoading = true;
      try {
        const estimate = await studio().runs.estimate({ config });
        if (request !== this.estimateRequest) return;
        this.estimate = estimate;
        this.estimateError = null;
      } catch (error) {
        if (request !== this.estimateRequest) return;
        this.estimate = null;
        this.estimateError = asError(error);
      } finally {
        if (request === this.estimateRequest) this.estimateLoading = false;
      }
    },
  },
});
