/**
 * Quantizing a loaded model for QLoRA: every linear layer of the transformer blocks gets a 4-bit
 * base weight. Token embeddings, norms and the LM head stay float32 unless `includeLmHead` is
 * set. transformers' bitsandbytes integration also keeps the head in full precision by default
 * (`get_keys_to_not_convert`), for numerical stability: its rounding errors reach the logits
 * directly.
 */
import type { CausalLM } from '../models/transformer';
import type { QuantType } from './nf4';
import { quantizeLinear, validateQuantSettings, type QuantSettings } from './qlinear';

export interface ModelQuantSettings extends QuantSettings {
  /** Also quantize an untied `lm_head`. Default false. A tied head is the embedding table and is never quantized. */
  includeLmHead?: boolean;
}

export interface QuantizationReport {
  /** Module paths of the quantized layers, in model order. */
  layers: string[];
  quantType: QuantType;
  blocksize: number;
  doubleQuant: boolean;
  /** Weights stored in 4 bits (biases excluded: they stay float32). */
  quantizedParameters: number;
  /** Bytes of the tensors that hold the quantized weights: packed codes and absmax constants. */
  bytes: number;
  bytesPerParameter: number;
}

/** Reports the quantized linear layers of a model, e.g. one loaded with `loadModel(dir, { quantize })`. */
export function quantizationReport(model: CausalLM, settings: QuantSettings): QuantizationReport {
  const layers = model.linearLayers().filter((layer) => layer.quantized);
  const quantizedParameters = layers.reduce((sum, layer) => sum + layer.inFeatures * layer.outFeatures, 0);
  const bytes = layers.reduce((sum, layer) => sum + layer.quantized!.bytes, 0);
  return {
    layers: layers.map((layer) => layer.name),
    quantType: settings.quantType,
    blocksize: settings.blocksize,
    doubleQuant: settings.doubleQuant,
    quantizedParameters,
    bytes,
    bytesPerParameter: quantizedParameters > 0 ? bytes / quantizedParameters : 0,
  };
}

/** Quantizes the linear layers of `model` in place and reports what they now occupy. */
export function quantizeModel(model: CausalLM, settings: ModelQuantSettings): QuantizationReport {
  validateQuantSettings(settings);
  const targets = model.linearLayers().filter((layer) => layer !== model.lmHead || settings.includeLmHead === true);
  for (const layer of targets) quantizeLinear(layer, settings);
  return quantizationReport(model, settings);
}
