"""Names and orders shared by every report: metric titles, protocol order, each kind's table metrics."""

# Which metrics each kind of protocol reports in the tables (the paper's choice).
TABLE_METRICS = {
    "classification": ("auroc", "f1"),
    "segmentation": ("dice", "jaccard"),
    "caption": ("bleu1", "bleu2", "bleu4", "meteor", "cider", "rouge1", "rouge2", "rougeL"),
}
METRIC_TITLES = {"auroc": "AUROC", "f1": "F1", "dice": "Dice", "jaccard": "Jaccard", "accuracy": "Accuracy",
                 "balanced_accuracy": "Balanced accuracy", "pixel_accuracy": "Pixel accuracy", "miou": "mIoU",
                 "bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu4": "BLEU-4", "meteor": "METEOR", "cider": "CIDEr",
                 "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}
PROTOCOL_ORDER = ("retrieval", "linear", "seg-linear", "seg-upernet", "caption", "federated", "label-efficiency")
MAIN_METRIC = {"classification": "auroc", "segmentation": "dice", "caption": "cider"}
