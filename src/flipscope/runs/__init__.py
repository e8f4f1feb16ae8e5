"""One module per user-facing command (compare, kld, mtbench and judge, noise floor, attribute, advise, lm-eval
import, save, prompt): its typed settings and the function the CLI calls."""
