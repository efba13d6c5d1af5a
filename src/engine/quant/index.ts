/** 4-bit quantization of base weights for QLoRA: NF4/FP4 codebooks, double quantization, quantized linear layers. */
export {
  DEFAULT_BLOCKSIZE,
  FP4_CODEBOOK,
  MAX_BLOCKSIZE,
  MIN_BLOCKSIZE,
  NF4_CODEBOOK,
  codebookFor,
  dequantizeBlockwise,
  packNibbles,
  packNibblesInt32,
  quantizeBlockwise,
  unpackNibbles,
  unpackNibblesInt32,
  unpackNibblesTensor,
  type QuantType,
} from './nf4';
export { DOUBLE_QUANT_BLOCKSIZE, absmaxErrorBound, dequantizeAbsmax, doubleQuantize } from './double-quant';
export { QuantizedWeight, createQuantizedMatMul, quantizedProduct, quantizeLinear, validateQuantSettings, type QuantSettings } from './qlinear';
export { quantizationReport, quantizeModel, type ModelQuantSettings, type QuantizationReport } from './model';
