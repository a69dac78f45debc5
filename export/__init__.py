"""emotion-edge export: QAT fine-tuning and verified fully-int8 TFLite export."""
