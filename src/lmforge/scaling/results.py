"""What `lmforge scale plan|run|status|fit|predict|verify|coordcheck|tune` show: each result's human and JSON renderings."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge import figures
from lmforge.figures import plural


def _ci(ci) -> str:
    return f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def within_lines(w: dict | None) -> list[str]:
    """Whether a forecast may be called "within X%" (`fitting.within_claim`), in words."""
    if not w:
        return []
    if w["half_width_pct"] is None:
        return [f"cannot call this forecast within {w['claim_pct']:g}%: it has no 95% interval (fit with "
                f"--bootstrap of 10 or more)"]
    if not w["allowed"]:
        return [f"cannot call this forecast within {w['claim_pct']:g}%: its 95% interval is +-{w['half_width_pct']:.1f}%"]
    if "met" in w:
        return [f"within {w['claim_pct']:g}%: {'met' if w['met'] else 'NOT met'} (95% interval "
                f"+-{w['half_width_pct']:.1f}%)"]
    return [f"a within-{w['claim_pct']:g}% forecast is supported (95% interval +-{w['half_width_pct']:.1f}%)"]


@dataclass
class SweepPlan(figures.Result):
    """`scaling.plan`'s runs, their estimated wall-clock here, and what the design can identify."""

    plan: dict
    out: str | None  # the sweep folder written, if any

    def lines(self) -> list[str]:
        p, cal = self.plan, self.plan["calibration"]
        out = [f"{'run':<18} {'params':>10} {'tokens':>11} {'tok/param':>9} {'steps':>6} {'6ND':>9} {'FLOPs':>9} "
               f"{'est.':>7}"]
        out += [f"{r['name']:<18} {r['params']:>10,} {r['tokens']:>11,} {r['tokens'] / r['params']:>9.1f} "
                f"{r['steps']:>6} {r['flops']:>9.2e} {r['flops_exact']:>9.2e} {r['estimated_s']:>6.0f}s"
                for r in p["runs"]]
        out += self._cooldowns(p)
        out.append(f"{len(p['runs'])} runs ({p['design']}, knob {p['knob']}), {p['total_flops']:.3g} of "
                   f"{p['budget_flops']:.3g} FLOPs; estimated {p['estimated_wall_s'] / 60:.1f} min on "
                   f"{plural(p['parallel'], 'process', 'processes')} x {plural(p['threads_per_process'], 'thread')} "
                   f"({p['estimated_serial_s'] / 60:.1f} min serial; calibrated here at "
                   f"{1 / cal['seconds_per_flop'] / 1e9:.1f} GFLOP/s + {1e3 * cal['seconds_per_step_fixed']:.0f} "
                   f"ms/step; tokenizing not included)")
        out += self._identifiability(p["identifiability"])
        out += [f"warning: {w}" for w in p["warnings"]]
        if self.out:
            out.append(f"sweep written to {p['sweep']}; train it with: lmforge scale run {self.out}")
        return out

    @staticmethod
    def _cooldowns(p: dict) -> list[str]:
        """Branched cooldowns: each trunk, what it branches, and the FLOPs saved against separate runs."""
        if p.get("cooldowns") != "branched":
            return []
        out = [f"{t['name']:<18} {t['params']:>10,} {t['tokens']:>11,} {'':>9} {t['stop']:>6} {'':>9} "
               f"{t['flops_exact']:>9.2e} {t['estimated_s']:>6.0f}s  trunk: stable to step {t['stop']}, "
               f"branches {', '.join(t['branches'])}" for t in p["trunks"]]
        out.append(f"branched cooldowns: each run trains from its size's trunk at its decay start, a run's FLOPs above "
                   f"are its own length's, its est. its cooldown's; {p['flops_branched']:.3g} FLOPs instead of "
                   f"{p['flops_separate']:.3g} for separate runs ({100 * p['saving']:.0f}% saved)")
        return out

    @staticmethod
    def _identifiability(ident: dict) -> list[str]:
        ci = ident["ci"]
        out = [f"identifiability before training (95%, delta method under the prior {ident['prior_name']}, "
               f"run-to-run noise {100 * ident['noise']:.2g}%): " +
               ", ".join(f"{k} [{ci[k][0]:.3g}, {ci[k][1]:.3g}]" for k in ("E", "A", "B", "alpha", "beta"))]
        for t in ident["targets"]:
            claim = ""
            if t["within"]:
                claim = (f"; a within-{t['within']['claim_pct']:g}% forecast is " +
                         ("possible" if t["within"]["allowed"] else "NOT possible with this design"))
            out.append(f"  target {t['target']} ({t['times_largest_run']:.1f}x the largest run): forecast interval "
                       f"+-{100 * t['half_width']:.1f}%{claim}")
        return out


@dataclass
class SweepStatus(figures.Result):
    """Every run of a sweep: state, steps, loss (`runner.sweep_status`)."""

    rows: list[dict]

    def lines(self) -> list[str]:
        out = [f"{'run':<18} {'state':<9} {'steps':>11} {'params':>10} {'tokens':>10} {'FLOPs':>9} {'val loss':>9}"]
        for r in self.rows:
            loss = f"{r['val_loss']:.4f}" if "val_loss" in r else ""
            out.append(f"{r['name']:<18} {r['state']:<9} {r['step']:>5}/{r['steps']:<5} {r['params']:>10,} "
                       f"{r['tokens']:>10,} {r['flops']:>9.2e} {loss:>9}")
        return out


@dataclass
class CoordCheck(figures.Result):
    """`coordcheck.coordinate_check`'s activation and logit scales across widths."""

    check: dict

    def lines(self) -> list[str]:
        r = self.check
        lr = f"lr {r['lr']:g}" + (f" (Muon's {r['muon_lr']:g})" if r["muon_lr"] else "")
        out = [f"coordinate check: widths {', '.join(map(str, r['widths']))}, {plural(r['layers'], 'layer')}, "
               f"{plural(r['heads'], 'head')}, {plural(r['steps'], 'step')} of {r['optimizer']} at {lr} on "
               f"{r['device']} (muP base width {r['mup_base_width']}); scale = mean |x|, widest over narrowest after "
               f"the last step"]
        for name, part in r["parametrizations"].items():
            ratios = ", ".join(f"{t} x{g:.2f}" for t, g in part["growth"].items())
            out.append(f"  {name:<8} largest change x{part['max_growth']:.2f}: {ratios}")
        if "plot" in r:
            out += [f"plot: {r['plot']}", f"numbers: {r['file']}"]
        return out


@dataclass
class Fit(figures.Result):
    """`scaling.fit`'s law, intervals, the other approaches, IsoFLOP and L(C), and what was left out."""

    fit: dict

    def lines(self) -> list[str]:
        r, ci = self.fit, self.fit["ci"]
        out = [f"{r['law']}  ({r['points']} points, Huber delta {r['method']['huber_delta']:g}, "
               f"95% bootstrap intervals over {r['method']['bootstrap']} resamples)"]
        choice = r.get("form_choice", {})
        if "approach3" in choice and "kaplan" in choice:
            out.append(f"form: {r['form']} ({choice['rule']}; mean |error| approach 3 {_pct(choice['approach3'])}, "
                       f"Kaplan's {_pct(choice['kaplan'])})")
        for k in ("E", "A", "B", "alpha", "beta"):
            # the fit's lower bound for E is e^-20: at it, E is not estimated, only bounded above
            bound = "  (at its lower bound: the sweep does not identify E)" if k == "E" and r[k] < 1e-8 else ""
            out.append(f"  {k:<6} {r[k]:.4g}{_ci(ci[k])}{bound}")
        out.append(f"compute-optimal allocation: N_opt ~ C^{r['a']:.3f}{_ci(ci['a'])}, "
                   f"D_opt ~ C^{r['b']:.3f}{_ci(ci['b'])}")
        out.append("tokens per parameter at the optimum: " +
                   ", ".join(f"{v:.1f} at {c} FLOPs" for c, v in r["tokens_per_param_at_optimum"].items()))
        res = r["residuals"]
        out.append(f"residuals: rms {100 * res['rmse_log']:.2f}% of loss, largest {100 * res['max_abs_relative']:.2f}%")
        out += self._noise(r)
        out += [self._approach(name, ap) for name, ap in r.get("approaches", {}).items()
                if "skipped" in ap or "alpha" in ap]
        out += self._isoflop(r["isoflop"]) + self._loss_vs_compute(r["loss_vs_compute"])
        cd = r.get("cooldowns") or {}
        if cd.get("mode") == "branched":
            out.append(f"points: cooldowns branched off {plural(cd['trunks'], 'WSD trunk')} (one per size), "
                       f"{cd['flops']:.3g} training FLOPs instead of {cd['flops_separate']:.3g} for separate runs "
                       f"({100 * cd['saving']:.0f}% saved)")
        out += [f"excluded {e['name']}: {e['reason']}" for e in r["excluded"]]
        out += [f"plot: {p}" for p in r.get("plots", [])]
        if r.get("fit_file"):
            out.append(f"fit: {r['fit_file']}")
        return out

    @staticmethod
    def _noise(r: dict) -> list[str]:
        noise = r.get("noise")
        if not noise:
            return []
        rtr = (f"{100 * noise['run_to_run']:.2f}% from {plural(noise['repeated_points'], 'repeated point')}"
               if noise["run_to_run"] else "not measured (no repeated runs)")
        return [f"noise: run-to-run {rtr}; intervals use {100 * noise['used']:.2f}% ({noise['used_dof']} degrees of "
                f"freedom, {r['method'].get('interval', 'cases')} bootstrap)"]

    @staticmethod
    def _approach(name: str, ap: dict) -> str:
        if "skipped" in ap:
            return f"  approach {name}: skipped ({ap['skipped']})"
        tests = ap.get("backtests") or {"compute": ap.get("backtest")}
        back = "".join(f"; backtest {kind} ({bt['held_out']} held out): mean |error| {100 * bt['mean_abs_error']:.2f}%, "
                       f"max {100 * bt['max_abs_error']:.2f}%" for kind, bt in tests.items() if bt)
        return (f"  approach {name}: E {ap['E']:.4g}, A {ap['A']:.4g}, B {ap['B']:.4g}, alpha {ap['alpha']:.3f}, "
                f"beta {ap['beta']:.3f}, rms {100 * ap['rmse_log']:.2f}%{back}")

    @staticmethod
    def _isoflop(iso: dict) -> list[str]:
        if "a" in iso:
            out = [f"IsoFLOP ({len(iso['levels'])} levels): N_opt ~ C^{iso['a']:.3f}, D_opt ~ C^{iso['b']:.3f}; "
                   f"tokens/parameter " + ", ".join(f"{t:.1f}" for t in iso["tokens_per_param"])]
        else:
            out = [f"IsoFLOP: skipped ({iso['skipped']})"]
        return out + [f"  level left out: {note}" for note in iso.get("skipped_levels", [])]

    @staticmethod
    def _loss_vs_compute(lc: dict) -> list[str]:
        return [f"L(C) = {lc['a']:.4g} C^{lc['b']:.4f} + {lc['c']:.4f}" if "a" in lc else f"L(C): skipped ({lc['skipped']})"]

    def to_json(self) -> str:
        return figures.dumps({k: v for k, v in self.fit.items() if k != "bootstrap_samples"})


@dataclass
class Prediction(figures.Result):
    """`scaling.predict`'s loss at (N, D) or at the compute-optimal point of C, with its interval."""

    prediction: dict

    def lines(self) -> list[str]:
        r = self.prediction
        out = [f"predicted loss {r['loss']:.4f}{_ci(r['interval'])} for {r['params']:.4g} parameters on "
               f"{r['tokens']:.4g} tokens ({r['tokens_per_param']:.1f} tokens/parameter, {r['flops']:.3g} FLOPs, "
               f"{r['times_largest_run']:.1f}x the largest fitted run)"]
        if "loss_vs_compute" in r:
            out.append(f"L(C) predicts {r['loss_vs_compute']:.4f}{_ci(r['loss_vs_compute_interval'])} at the "
                       f"compute-optimal point")
        return out + within_lines(r["within"])


@dataclass
class Verification(figures.Result):
    """`scaling.verify`'s trained target against the fit's forecast for it."""

    verification: dict

    def lines(self) -> list[str]:
        r = self.verification
        return [f"target {r['params']:,} parameters on {r['tokens']:,} tokens = {r['flops']:.3g} FLOPs "
                f"({r['times_largest_run']:.1f}x the largest sweep run)",
                f"predicted {r['predicted']:.4f}{_ci(r['interval'])}, actual {r['actual']:.4f}: relative error "
                f"{100 * r['relative_error']:+.2f}% ({'inside' if r['within_interval'] else 'outside'} the interval)",
                *within_lines(r["within"])]


@dataclass
class Tune(figures.Result):
    """`tune.tune`'s learning rates and the one chosen; where the overlay goes next."""

    tune: dict
    sweep: str | None = None  # the sweep folder the tune read, if any

    def lines(self) -> list[str]:
        from pathlib import Path

        from lmforge.folders.sweep import TUNE, SweepDir

        r = self.tune
        out = [f"tune: width {r['width']} under muP (model.mup_base_width {r['mup_base_width']}), {r['n_layer']} layers, "
               f"{r['steps']} steps of {r['tokens_per_step']:,} tokens ({r['optimizer']}, {r['schedule']}), "
               f"{plural(len(r['points']), 'learning rate')}; final validation loss:"]
        for i, p in enumerate(r["points"]):
            loss = f"{p['loss']:.4f}" if p["loss"] is not None else f"diverged ({p['diverged']})"
            out.append(f"  lr {p['lr']:<10.4g} {loss}{'   <- best' if i == r['best'] else ''}")
        vertex = r["lr_parabola"]
        out.append(f"best: train.lr {r['lr']:.4g} (the grid point of lowest loss"
                   + (f"; a parabola through it and its neighbours in log lr puts the minimum at {vertex:.4g}, "
                      f"not chosen: one seed's losses near the optimum differ by about their noise)" if vertex else ")"))
        if r["at_edge"]:
            flag = "--lr-min" if r["at_edge"] == "smallest" else "--lr-max"
            out.append(f"warning: the best is the grid's {r['at_edge']} lr: the optimum may lie beyond it; extend {flag}")
        if r.get("tie_embeddings"):
            out.append("warning: the embedding and output head are tied (model.tie_embeddings); under muP the wider "
                       "models of a tied head measured no better than the narrow one (docs/LOG.md, transfer "
                       "benchmark): set model.tie_embeddings=false for the tune and the wider runs")
        overlay = r["overlay_file"]
        out += [f"plot: {r['plot']}", f"numbers: {r['file']}", f"config: {overlay} (model.parametrization mup, "
                f"model.mup_base_width {r['width']}, train.lr {r['lr']:.4g})",
                f"  a wider run: lmforge train --config {overlay} --set model.n_embd=WIDTH ..."]
        folder = Path(overlay).parent
        if self.sweep or folder.name == TUNE:
            sweep = Path(self.sweep) if self.sweep else folder.parent
            if SweepDir(sweep).is_sweep():
                out.append(f"  this sweep: lmforge scale run {sweep} uses it (while none of its runs has started)")
            else:
                out.append(f"  a sweep: lmforge scale plan --out {sweep} uses it")
        else:
            out.append(f"  a sweep: lmforge scale plan --out SWEEP uses it when it is in SWEEP/{TUNE}/ (scale tune --out SWEEP/{TUNE})")
        return out
