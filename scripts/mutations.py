"""The mutations scripts/mutate.py makes, and the tests that must catch them.

A mutation is a file (under src/mlp), a snippet that occurs in it exactly once, its replacement,
and what it breaks in words.  When the code moves and a snippet is gone, mutate.py reports the
mutation as stale: rewrite it against the new code rather than deleting it.  ``tests`` (pytest
arguments) overrides the file's selection in ``TESTS``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    file: str
    old: str
    new: str
    what: str
    tests: tuple[str, ...] = ()


UNITS = "tests/test_units_"
BEST = f"{UNITS}checkpoint.py::test_checkpoint_pth_holds_the_best_epoch_not_a_tie_or_a_later_worse_one"
EPOCH_TOTALS = "tests/test_train.py::test_epoch_train_loss_and_accuracy_count_every_sample_once"

# The tests each file's mutations run: few and quick, so that the whole run fits in about half an hour.
TESTS: dict[str, list[str]] = {
    "mlp/training/loop.py": [f"{UNITS}training.py", BEST, EPOCH_TOTALS],
    "mlp/training/trainer.py": [f"{UNITS}training.py", BEST, EPOCH_TOTALS],
    "mlp/training/state.py": [f"{UNITS}training.py", BEST, EPOCH_TOTALS],
    "mlp/training/optim.py": [f"{UNITS}training.py"],
    "mlp/training/distributed.py": [f"{UNITS}training.py::test_every_rank_must_get_images_of_every_global_batch",
                                    "tests/test_distributed.py::test_batches_that_split_are_accepted",
                                    "tests/test_distributed.py::test_a_world_size_the_batches_cannot_be_split_over_is_refused"],
    "mlp/run/checkpoint.py": [f"{UNITS}checkpoint.py"],
    "mlp/run/durable.py": [f"{UNITS}checkpoint.py"],
    "mlp/run/folder.py": [f"{UNITS}checkpoint.py"],
    "mlp/commands/evaluate.py": [f"{UNITS}evaluate.py"],
    "mlp/data.py": [f"{UNITS}augment.py", "tests/test_data.py::test_epoch_batches_cover_every_index_once_and_follow_the_seed",
                    "tests/test_data.py::test_validation_split_is_seeded_and_disjoint"],
    "mlp/observe/diagnostics.py": [f"{UNITS}diagnostics.py",
                                   "tests/test_diagnostics.py::test_the_schedule_is_dense_at_the_start_then_regular_and_at_every_epoch_end",
                                   "tests/test_diagnostics.py::test_units_saturated_at_either_end_are_inactive"],
    "mlp/comparison/findings.py": [f"{UNITS}findings.py"],
    "mlp/model.py": [f"{UNITS}init.py", "tests/test_model.py::test_every_layer_gets_the_variance_of_its_formula",
                     "tests/test_model.py::test_orthogonal_init_and_auto_records_what_it_picked"],
    "mlp/commands/predict.py": [f"{UNITS}predict.py", "tests/test_predict.py::test_polarity_is_read_from_the_training_mean"],
    "mlp/observe/novelty.py": [f"{UNITS}predict.py"],
    "mlp/training/workers.py": [f"{UNITS}workers.py"],
    "mlp/threads.py": ["tests/test_threads.py::test_the_tuner_keeps_the_fastest_count_and_follows_a_change_of_load",
                       "tests/test_threads.py::test_the_tuner_waits_longer_while_its_choice_holds_and_ignores_noise",
                       "tests/test_threads.py::test_a_count_far_slower_than_the_one_in_use_is_dropped_after_two_steps",
                       "tests/test_threads.py::test_auto_follows_omp_num_threads_the_pools_share_and_torchrun"],
    "mlp/comparison/trainings.py": [f"{UNITS}workers.py"],
    "mlp/sweep/leaderboard.py": [f"{UNITS}workers.py"],
    "mlp/training/warmstart.py": ["tests/test_warmstart.py"],
    "mlp/training/warmhelper.py": ["tests/test_warmstart.py"],
    "mlp/imports.py": ["tests/test_train.py::test_paused_gc_pauses_the_collector_then_freezes_what_exists_and_resumes",
                       "tests/test_train.py::test_import_meanwhile_imports_on_another_thread_and_leaves_errors_to_the_import_that_needs_it"],
}


def M(file, old, new, what, *tests):
    return Mutation(f"mlp/{file}", old, new, what, tests)


LOOP, TRAINER, STATE = "training/loop.py", "training/trainer.py", "training/state.py"
OPTIM, DDP = "training/optim.py", "training/distributed.py"
CKPT, DURABLE, FOLDER = "run/checkpoint.py", "run/durable.py", "run/folder.py"
EVAL, DATA = "commands/evaluate.py", "data.py"
DIAG, FINDINGS, MODEL = "observe/diagnostics.py", "comparison/findings.py", "model.py"
PREDICT, NOVELTY = "commands/predict.py", "observe/novelty.py"
WARM, HELPER = "training/warmstart.py", "training/warmhelper.py"
WORKERS, TRAININGS, BOARD = "training/workers.py", "comparison/trainings.py", "sweep/leaderboard.py"
THREADS = "threads.py"
IMPORTS, BOARD_TB = "imports.py", "observe/tensorboard.py"
CROP_TEST = "tests/test_model.py::test_a_cropped_model_reads_the_centre_alone"
CROP_TV = "tests/test_model.py::test_the_crop_takes_the_pixels_torchvisions_center_crop_takes"

MUTATIONS: list[Mutation] = [
    # --- the training step and the epoch (training/trainer.py; the run's course in training/loop.py)
    M(TRAINER, 'record["val_accuracy"] > s.best["val_accuracy"]', 'record["val_accuracy"] >= s.best["val_accuracy"]',
      "a tie on validation accuracy replaces checkpoint.pth"),
    M(TRAINER, 'improved = data.val is None or record["val_accuracy"] > s.best["val_accuracy"]', "improved = True",
      "every epoch, a worse one too, replaces checkpoint.pth"),
    M(TRAINER, 'best=self.checkpoint("best", metrics=record) if improved else None',
      'best=self.checkpoint("best", metrics=record)', "checkpoint.pth written every epoch, best or not"),
    M(TRAINER, "self.scaler.scale(loss * (len(y) * self.world_size / global_batch)).backward()",
      "self.scaler.scale(loss).backward()", "DDP's re-weighting of unequal shards removed"),
    M(TRAINER, "len(self.data.train) - self.state.batch * batch_size)", "len(self.data.train) - (self.state.batch + 1) * batch_size)",
      "DDP: the global size of the last batch off by one batch"),
    M(TRAINER, "torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)", "pass",
      "gradient clipping dropped"),
    M(TRAINER, "label_smoothing=self.cfg.train.label_smoothing)", ")", "label smoothing dropped"),
    M(TRAINER, "self.optimizer.zero_grad(set_to_none=True)", "pass", "gradients accumulate across steps"),
    M(TRAINER, "            self.scheduler.step()\n        return loss.detach(), logits", "            pass\n        return loss.detach(), logits",
      "the schedule never steps", f"{UNITS}training.py", "tests/test_train.py::test_learning_rate_schedules_follow_the_config"),
    M(TRAINER, "raise Diverged(losses[bad].item(), first_step + bad)", "raise Diverged(losses[bad].item(), first_step + bad + 1)",
      "the divergence step off by one"),
    M(TRAINER, "check_finite(window, s.step - len(s.pending) + 1)", "check_finite(window, s.step - len(s.pending))",
      "the divergence step of an epoch's last losses off by one"),
    M(LOOP, 'trainer.model.load_state_dict(best_checkpoint["model_state"])', "pass",
      "the final test measures the last epoch's weights, not the best's"),
    M(LOOP, 'summary = {"loss": test["loss"], "accuracy": test["accuracy"], "epoch": best["epoch"]}',
      'summary = {"loss": test["loss"], "accuracy": test["accuracy"], "epoch": trainer.state.epoch}',
      "the test result labelled with the last epoch"),
    M(TRAINER, '"train_accuracy": totals.correct / totals.seen}', '"train_accuracy": totals.correct / max(totals.seen - 1, 1)}',
      "training accuracy divides by one sample too few"),
    M(LOOP, "while trainer.state.epoch < cfg.train.epochs:", "while trainer.state.epoch <= cfg.train.epochs:",
      "one epoch more than train.epochs"),
    M(TRAINER, '"epoch": s.epoch, "step": s.step, "parameters": self.parameters,',
      '"epoch": s.epoch + 1, "step": s.step, "parameters": self.parameters,',
      "a checkpoint's epoch off by one"),
    M(TRAINER, "self.pad_value = (-torch.tensor(self.data.mean) / torch.tensor(self.data.std))",
      "self.pad_value = (torch.tensor(self.data.mean) / torch.tensor(self.data.std))",
      "augmentation pads with a bright pixel instead of black"),
    M(LOOP, "if cfg.train.epochs < epochs_done:", "if cfg.train.epochs <= epochs_done:",
      "a resume with train.epochs equal to the epochs done is refused",
      "tests/test_run_folder.py::test_a_stop_during_the_final_test_leaves_it_for_the_resume"),
    # --- the training state (training/state.py)
    M(STATE, "        if improved:\n            self.best =", "        if False:\n            self.best =",
      "the best epoch is never recorded"),
    M(STATE, "window, first = stack(self.pending, self.streams.device), self.step - len(self.pending) + 1",
      "window, first = stack(self.pending, self.streams.device), self.step - len(self.pending)",
      "the first step of a logging window off by one"),
    M(STATE, "loss_sum += value * size", "loss_sum += value", "the epoch's loss sums batch means, not samples"),
    M(STATE, "correct = self.carried.correct + (predicted == self.labels[samples]).sum()",
      "correct = (predicted == self.labels[samples]).sum()", "a resumed epoch forgets its earlier correct predictions",
      EPOCH_TOTALS, "tests/test_resume.py::test_interrupted_and_resumed_run_ends_bit_identical[7-2]"),
    M(STATE, "self.epoch, self.batch, self.carried = self.epoch + 1, 0, EpochTotals()",
      "self.epoch, self.batch, self.carried = self.epoch + 1, 0, self.carried",
      "an epoch's totals carried into the next"),
    M(STATE, 'saved["pending"] = saved.pop("window")[:saved["step"] % log_every]',
      'saved["pending"] = saved.pop("window")[:saved["step"] % log_every + 1]',
      "a format-1 ring of losses upgraded with one slot too many",
      "tests/test_resume.py::test_a_format_1_last_pth_resumes_exactly"),
    # --- the optimizer and schedule (training/optim.py)
    M(OPTIM, "dict(momentum=o.momentum, nesterov=o.nesterov)", "dict(momentum=o.momentum)", "nesterov dropped"),
    M(OPTIM, "dict(momentum=o.momentum, nesterov=o.nesterov)", "dict(momentum=0.9, nesterov=o.nesterov)",
      "momentum fixed at the default"),
    M(OPTIM, "return cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, fused=True, **kwargs)",
      "return cls(model.parameters(), lr=o.lr, fused=True, **kwargs)", "weight decay dropped"),
    M(OPTIM, "dict(betas=o.betas)", "dict()", "Adam's betas dropped"),
    M(OPTIM, 'torch.optim.Adam if o.name == "adam" else torch.optim.AdamW',
      'torch.optim.AdamW if o.name == "adam" else torch.optim.Adam', "Adam and AdamW swapped"),
    M(OPTIM, "start_factor=1.0 / warmup", "start_factor=1.0 / (warmup + 1)", "the warm-up starts one step lower"),
    M(OPTIM, "T_max=max(total - warmup, 1)", "T_max=max(total, 1)", "the cosine ignores the warm-up's steps",
      f"{UNITS}training.py", "tests/test_train.py::test_learning_rate_schedules_follow_the_config"),
    M(OPTIM, "step_size=s.step_size * steps_per_epoch", "step_size=s.step_size * steps_per_epoch + 1",
      "the step schedule decays one step late"),
    M(OPTIM, "pct_start=s.pct_start)", ")", "onecycle's pct_start dropped"),
    M(OPTIM, "eta_min=s.min_lr)", ")", "the cosine's min_lr dropped"),
    # --- DDP (training/distributed.py)
    M(DDP, "need = per_rank * world_size", "need = world_size", "batch norm's two images per rank not required"),
    M(DDP, "if 0 < last < need:", "if 0 < last <= need:", "a last batch that splits exactly is refused"),
    M(DDP, "if batch_size < need:", "if batch_size < need - 1:", "a global batch one short of the ranks is accepted"),
    # --- durable writes (run/durable.py) and loading (run/checkpoint.py)
    M(DURABLE, "        os.fsync(fd)\n    except BaseException:", "        pass\n    except BaseException:",
      "the file fsync dropped"),
    M(DURABLE, "            fsync_folder(folder)  # the renames themselves made durable", "            pass",
      "the folder fsync dropped"),
    M(DURABLE, "            written.append((write_temporary(path, data), path))",
      "            os.replace(write_temporary(path, data), path)\n            written.append((path, path))",
      "each file renamed as soon as it is written, before the next one is on the disk"),
    M(DURABLE, "    except BaseException:\n        for tmp, _ in written:\n            tmp.unlink(missing_ok=True)\n        raise\n    try:\n        kept",
      "    except BaseException:\n        raise\n    try:\n        kept", "a failed write leaves the other temporary files"),
    M(DURABLE, "        os.close(fd)\n        tmp.unlink(missing_ok=True)\n        raise", "        os.close(fd)\n        raise",
      "a failed write leaves its own temporary file"),
    M(CKPT, "damaged = archive.testzip()", "damaged = None", "the zip CRC check dropped"),
    M(CKPT, 'torch.load(path, map_location="cpu", weights_only=True)', 'torch.load(path, map_location="cpu", weights_only=False)',
      "checkpoints may run code when loaded"),
    M(CKPT, "version > FORMAT_VERSION", "version >= FORMAT_VERSION", "this mlp's own format refused"),
    M(CKPT, "missing = [k for k in REQUIRED_KEYS if k not in ckpt]", "missing = []", "an incomplete checkpoint accepted"),
    # --- the run folder (run/folder.py)
    M(FOLDER, 'if item.name in RUN_FILES or item.name in kept or item.name.startswith("events.out.tfevents.")]',
      "if item.name in RUN_FILES or item.name in kept]",
      "--overwrite keeps the old TensorBoard events"),
    M(FOLDER, "                    item.unlink(missing_ok=True)", "                    pass", "temporary files of a killed write kept"),
    M(FOLDER, "        folder.remove_leftovers()\n        return folder\n\n    @classmethod", "        return folder\n\n    @classmethod",
      "--overwrite keeps temporary files"),
    M(FOLDER, "folder.locked().remove_leftovers()", "folder.locked()", "a resumed folder keeps temporary files"),
    M(FOLDER, "blobs[METRICS] = json_bytes({**self.facts, **metrics})", "blobs[METRICS] = json_bytes(metrics)",
      "metrics.json loses the run's name, device, parameters and timings",
      "tests/test_train.py::test_metrics_record_where_the_time_went"),
    M(FOLDER, "fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)", "fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)",
      "the lock is shared: two processes write one run",
      "tests/test_run_folder.py::test_a_second_process_is_refused_while_a_run_folder_is_locked"),
    M(FOLDER, "self._lock.truncate(0)  # an empty lock file: released in good order", "pass",
      "a released lock still names its process",
      "tests/test_run_folder.py::test_a_lock_left_by_a_killed_process_is_taken_over_saying_so"),
    # --- evaluation (commands/evaluate.py)
    M(EVAL, "torch.bincount(y * num_classes + logits.argmax(1)", "torch.bincount(logits.argmax(1) * num_classes + y",
      "the confusion matrix transposed"),
    M(EVAL, "confusion.diag() / confusion.sum(1).clamp_min(1)", "confusion.diag() / confusion.sum(0).clamp_min(1)",
      "per-class accuracy becomes precision"),
    M(EVAL, '"loss": loss_sum.item() / max(total, 1)', '"loss": loss_sum.item() / max(total - 1, 1)',
      "the loss divided by one image too few"),
    M(EVAL, "        for start in range(0, len(split), batch_size):\n            x = split.images",
      "        for start in range(0, len(split) - 1, batch_size):\n            x = split.images",
      "the last image of a split is never measured"),
    M(EVAL, "    was_training = model.training\n    model.eval()", "    was_training = model.training",
      "measured in training mode (dropout on)"),
    M(EVAL, "model.train(was_training)", "model.train(True)", "evaluation leaves the model in training mode"),
    M(EVAL, "indices.append(wrong + start)", "indices.append(wrong)", "misclassified indices of later batches shifted"),
    M(EVAL, "(n={sum(row)})", "(n={result['total']})", "the report's per-class counts are the split's"),
    # --- augmentation and batches (data.py)
    M(DATA, "dy, dx = torch.randint(0, 2 * pad + 1, (2, b, 1), device=x.device, generator=generator)",
      "dy, dx = torch.randint(0, 2 * pad + 1, (2, b, 1), device=x.device, generator=generator)\n    dx = torch.full_like(dx, pad)",
      "the horizontal offset never drawn"),
    M(DATA, "torch.randint(0, 2 * pad + 1,", "torch.randint(0, 2 * pad,", "the largest offset never drawn"),
    M(DATA, "< 0.5\n", "< 0.1\n", "crop_flip mirrors a tenth of the images, not half"),
    M(DATA, "cols = torch.where(flip, cols.flip(3), cols)", "cols = cols", "crop_flip never mirrors"),
    M(DATA, 'pad = 2 if kind == "shift" else 4', "pad = 2", "crop_flip shifts 2 pixels, not 4"),
    M(DATA, "padded = pad_value.view(1, c, 1, 1)", "padded = torch.zeros_like(pad_value).view(1, c, 1, 1)",
      "the padding ignores the pad value"),
    M(DATA, "if len(sizes) > 1 and sizes[-1] < min_last:", "if len(sizes) > 1 and sizes[-1] <= min_last:",
      "a last batch of min_last images joins the one before", f"{UNITS}augment.py",
      "tests/test_data.py::test_epoch_batches_cover_every_index_once_and_follow_the_seed",
      "tests/test_run_folder.py::test_batch_norm_trains_when_the_last_batch_holds_one_image"),
    M(DATA, "return order[:val_size], order[val_size:]", "return order[:val_size], order[val_size - 1:]",
      "one validation image also trained on"),
    # --- diagnostics (observe/diagnostics.py)
    M(DIAG, 'stats["signal"] /= scale', "pass", "fp16's loss scale left in the signal"),
    M(DIAG, "self.signal = grad.pow(2).mean().sqrt() * grad.shape[0]", "self.signal = grad.pow(2).mean().sqrt()",
      "the signal per batch mean, not per example",
      "tests/test_diagnostics.py::test_signal_grad_rms_and_update_ratio_are_exact"),
    M(DIAG, "return self.stat <= low", "return self.stat < low", "a unit exactly at the tail's edge is alive"),
    M(DIAG, "step & (step - 1) == 0", "step & (step + 1) == 0", "the dense start measures the wrong steps"),
    M(DIAG, "return self.stat >= (high - low) / 2", "return self.stat > (high - low)",
      "a saturated unit must be twice as far out"),
    # --- the findings (comparison/findings.py; the speed, first-epoch and Adam sentences are gone)
    M(FINDINGS, "if abs(v - chance) > 0.25 * chance}", "if abs(v - chance) > 0.5 * chance}",
      "a first loss called far from a uniform guess only beyond half of it"),
    M(FINDINGS, "if seeds == 1 and len(runs) > 1:", "if seeds == 0 and len(runs) > 1:",
      "the one-seed caveat never said"),
    M(FINDINGS, 'if accuracy[a]["max"] < accuracy[best]["min"]]', 'if accuracy[a]["max"] < accuracy[best]["mean"]]',
      "seeds' ranges ranked when they overlap"),
    M(FINDINGS, 'order = sorted(accuracy, key=lambda a: -accuracy[a]["mean"])',
      'order = sorted(accuracy, key=lambda a: accuracy[a]["mean"])', "best and worst accuracy swapped"),
    M(FINDINGS, "(a for a in ratios if ratios[a] < VANISHING)", "(a for a in ratios if ratios[a] < 2 * VANISHING)",
      "the vanishing threshold doubled"),
    M(FINDINGS, "if peaks[layer] >= NOTABLE:", "if peaks[layer] > NOTABLE:", "exactly 5% inactive left unsaid"),
    M(FINDINGS, "if mean > 1 / SHRINKS or any(not (mean / STEADY <= s <= mean * STEADY) for s in steps):",
      "if mean > 1 / SHRINKS:", "an uneven shrink called steady"),
    # --- initialisation (model.py)
    M(MODEL, "[h.linear for h in hidden_layers(model)] + [model.output]", "[h.linear for h in hidden_layers(model)]",
      "the output layer keeps PyTorch's init"),
    M(MODEL, 'if layer.bias is not None and rule != "default":', "if layer.bias is not None:",
      "init: default no longer leaves PyTorch's biases"),
    M(MODEL, "            nn.init.zeros_(layer.bias)", "            pass", "biases not zeroed"),
    M(MODEL, 'nn.init.kaiming_normal_(layer.weight, a=slope, nonlinearity="leaky_relu")',
      'nn.init.kaiming_normal_(layer.weight, a=slope, nonlinearity="linear")', "He init without the ReLU gain"),
    M(MODEL, 'return "xavier" if act.family == "saturating" else ("lecun" if act.gain == "linear" else "kaiming")',
      'return "kaiming" if act.family == "saturating" else ("lecun" if act.gain == "linear" else "xavier")',
      "auto picks Xavier and He the wrong way round"),
    # --- predict's image reading (commands/predict.py) and the novelty check (observe/novelty.py)
    M(PREDICT, "image = ImageOps.exif_transpose(image)", "image = image", "the EXIF rotation ignored"),
    M(PREDICT, 'if image.mode == "P" and "transparency" in image.info:', "if False:", "a palette's transparency ignored"),
    M(PREDICT, 'return "dark" if brightness < DARK else "light" if brightness > LIGHT else None',
      'return "dark" if brightness < LIGHT else "light" if brightness > DARK else None', "the polarity bands swapped"),
    M(NOVELTY, 'return {**profile, "threshold": max(threshold, 1e-12)}', 'return {**profile, "threshold": max(2 * threshold, 1e-12)}',
      "the novelty threshold doubled"),
    M(NOVELTY, "fit, calibration = x[:n_fit], x[n_fit:n_fit + CALIBRATION_IMAGES]",
      "fit, calibration = x[:n_fit], x[:CALIBRATION_IMAGES]", "calibrated on the images it was fitted on"),
    # --- compare's and sweep's trainings (training/workers.py, comparison/trainings.py, sweep/leaderboard.py)
    M(WORKERS, "env[threads.SHARE_ENV] = str(self.threads)", "pass",
      "trainings not given their share of the cores (MLP_THREAD_SHARE)"),
    M(TRAININGS, 'if not queue or workers.signum is not None or any(r["status"] == "failed" for r in results):',
      "if not queue or workers.signum is not None:", "compare --jobs 1 goes on after a failed run"),
    M(TRAININGS, 'any(r["status"] == "failed" for r in results)', 'any(r["status"] in ("failed", "diverged") for r in results)',
      "compare --jobs 1 stops at a diverged run"),
    M(WORKERS, "return explicit_threads() or threads.worker_threads(jobs)",
      "return explicit_threads() or threads.worker_threads(1)",
      "trainings side by side each get every core"),
    M(BOARD, '-(r["best_val_acc"] or 0), -(r["test_acc"] or 0)))', '-(r["best_val_acc"] or 0), (r["test_acc"] or 0)))',
      "a leaderboard tie broken the other way"),
    M(BOARD, 'rows.sort(key=lambda r: (r["best_val_acc"] is None,', 'rows.sort(key=lambda r: (r["best_val_acc"] is not None,',
      "trials without a result first on the leaderboard"),
    # --- added after the first full run (appended, so that the numbers above stay)
    M(FOLDER, 'return "resume" if record.has(LAST) else "new"', 'return "new"',
      "an interrupted trial or compare run is trained again from scratch"),
    M(FOLDER, "    if status in ENDED:\n        return status", '    if status == "finished":\n        return status',
      "a pruned or diverged trial is trained again"),
    M(NOVELTY, "clamp_min(STD_FLOOR)", "clamp_min(0.0)", "a pixel constant in training gives an infinite novelty"),
    # --- added on the integrated tree (issue 18's split)
    M(WORKERS, 'return threads.positive_env("OMP_NUM_THREADS")', "return None",
      "the user's OMP_NUM_THREADS no longer wins"),
    # --- added with auto's measuring (issue 24)
    M(THREADS, "best = max(rates, key=lambda c: rates[c])",
      "best = min(rates, key=lambda c: rates[c])", "auto keeps the slowest thread count"),
    M(THREADS, "slower = statistics.median(self._timed) < self.SLOWER * self.rates[self.current]", "slower = False",
      "auto does not notice a busy process that appears"),
    M(THREADS, "best = self._chosen  # within", "pass  # within", "auto switches on noise"),
    M(THREADS, "self.hold = min(2 * self.hold, self.MAX_HOLD_S) if kept else self.FIRST_HOLD_S",
      "self.hold = self.FIRST_HOLD_S", "auto measures every 10 s however long its choice holds"),
    M(THREADS, "hopeless = rates[count] < self.HOPELESS * max(rates.values())", "hopeless = False",
      "a collapsed thread count is timed in full at every measurement"),
    M(THREADS, 'return [given], f"auto: OMP_NUM_THREADS={given}"', 'pass',
      "an OMP_NUM_THREADS in the environment no longer fixes the count"),
    # --- added with warm starts (issue 24)
    M(HELPER, "        sys.modules[\"numpy\"].random.seed()", "        pass", "every warm process draws the same NumPy random numbers"),
    M(HELPER, "    os.chdir(request[\"cwd\"])\n", "", "a warm process runs in the helper's folder"),
    M(HELPER, "    sys.path[0] = os.getcwd()  # as `python -m` puts it\n", "",
      "a warm process imports from the helper's folder, not its own"),
    M(HELPER, "if request[\"new_session\"]:", "if False:", "start_new_session is ignored"),
    M(WARM, "and startup_env(env) == startup_env(self.env) and", "and",
      "a process with another OMP_NUM_THREADS is forked from a helper that loaded libgomp with its own"),
    M(HELPER, "    signals.die_with_parent(signal.SIGKILL)\n", "",
      "the helper outlives a killed caller"),
    M(WARM, "        self.returncode = LOST\n", "        self.returncode = 0\n",
      "a child whose helper died is reported as having succeeded"),
    M(HELPER, "os.dup2(fd, target)", "pass", "a warm process writes to the helper's streams"),
    M(HELPER, "signal.signal(signal.SIGINT, signal.SIG_IGN)", "pass", "a terminal's Ctrl-C kills the helper"),
    M(HELPER, "signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as it starts", "pass",
      "a warm child ignores SIGINT"),
    M(HELPER, "        os.umask(request[\"umask\"])", "        pass", "a warm child has the helper's umask"),
    M(WARM, "            except ProcessLookupError:\n                pass  # it has just ended",
      "            except ProcessLookupError:\n                raise", "signalling an ended process raises"),
    M(WARM, "self._readers.append((reader, box))\n                else:\n                    self._readers.append((None, box))\n"
            "            if self.stdin is not None", "self._readers.append((reader, box))\n                else:\n"
            "                    self._readers.append((None, box))\n            if False", "communicate never writes its input"),
    # --- added with the fast recipe's crop and quicker start (issue 24)
    M(MODEL, "self.top, self.left = (int(round((n - size) / 2.0)) for n in (height, width))",
      "self.top, self.left = ((n - size) // 2 for n in (height, width))",
      "an odd margin is split the other way from torchvision's center_crop", CROP_TV),
    M(MODEL, "return x[..., self.top:self.top + self.size, self.left:self.left + self.size]",
      "return x[..., :self.size, :self.size]", "the crop takes the top-left corner", CROP_TV, CROP_TEST),
    M(MODEL, "    if crop > min(height, width):", "    if False:", "a crop larger than the images is accepted", CROP_TEST),
    M(MODEL, "    if tuple(read) != tuple(input_shape):\n        layers", "    if False:\n        layers",
      "model.crop is ignored: the model reads every pixel", CROP_TEST),
    M(DATA, "    return all((folder / f).is_file() for f in files)", "    return True",
      "dynamo is imported beside a download, which imports torchvision too",
      "tests/test_train.py::test_files_in_place_only_for_a_named_data_set_with_all_its_files"),
    M(IMPORTS, "            gc.freeze()\n", "", "what the imports made is scanned by every later full collection"),
    M(IMPORTS, "    gc.disable()\n    try:", "    try:", "the collector runs during the imports"),
    M(IMPORTS, "    thread.start()\n", "    run()\n    thread.start()\n",
      "dynamo is imported before the data are read, not beside them"),
    M(IMPORTS, "    if not when or module in sys.modules:", "    if module in sys.modules:",
      "dynamo is imported beside an image folder's reading, which imports too"),
    M(STATE, "        return float(images.detach().numpy().sum(dtype=np.float64))",
      "        return float(images.detach().numpy().sum(dtype=np.float32))",
      "the data fingerprint's sum is accumulated in float32", "tests/test_train.py::test_the_pixel_sum_is_a_float64_sum"),
    M(BOARD_TB, '        if config["train"].get("diagnostics", "step") == "off":\n            return\n', "",
      "the model graph and the input grid are written with the diagnostics off",
      "tests/test_diagnostics.py::test_epoch_mode_histogram_interval_and_off"),
]
