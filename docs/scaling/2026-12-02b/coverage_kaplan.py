"""Coverage of the benchmark's forecast intervals on a synthetic Kaplan law, at the benchmark's own 17 runs."""
import json, csv, math, sys, numpy as np
from lmforge.scaling import fitting
rows = list(csv.DictReader(open('/tmp/scalebench2/run/points.csv')))
runs = [{"name": r["name"], "params": float(r["params"]), "tokens": float(r["tokens"]), "flops": float(r["flops"])} for r in rows]
truthE = float(sys.argv[2]) if len(sys.argv) > 2 else 1.5
pts = [dict(r, loss=float(x["loss"])) for r, x in zip(runs, rows)]
n=np.log([p["params"] for p in pts]); d=np.log([p["tokens"] for p in pts]); l=np.log([p["loss"] for p in pts])
th,_=fitting.fit_law(n,d,l,1e-3,24,fixed_e=truthE,form="kaplan"); law=fitting.law_from_theta(th,form="kaplan")
print("truth", law)
T=[("wider-10x",491520,5.12e6),("longer-10x",245760,10.24e6),("wider-30x",491520,15.36e6),("widest-10x",917504,2742857),("widest-30x",917504,8228571)]
noise=0.0064
cover={t[0]:0 for t in T}; errs={t[0]:[] for t in T}; hws={t[0]:[] for t in T}; forms=[]
K=int(sys.argv[1]); FORM=sys.argv[3] if len(sys.argv)>3 else "auto"; pcover={t[0]:0 for t in T}; rcover={t[0]:0 for t in T}; ucover={t[0]:0 for t in T}; atb=0
for k in range(K):
    rng=np.random.default_rng(500+k)
    draw=[dict(r, loss=float(law.loss(r["params"], r["tokens"])*math.exp(rng.normal(0,noise)))) for r in runs]
    fit=fitting.fit_points(draw, bootstrap=60, starts=8, seed=k, compare=False, form=FORM)
    forms.append(fit["form"]); lo,hi=np.array(fitting._grid_and_bounds(fit["form"])[1]).T; th0=fitting.theta_of(fitting.law_of(fit)); bound=bool(np.any((th0-lo<1e-6)|(hi-th0<1e-6))); atb+=bound
    for lab,N,D in T:
        p=fitting.predict(fit,N,D); actual=law.loss(N,D)*math.exp(rng.normal(0,noise))
        cover[lab]+= p["interval"][0]<=actual<=p["interval"][1]
        boot=np.array([fitting.law_from_theta(np.array(t),form=fit["form"]).loss(N,D) for t in fit["bootstrap_samples"]["theta"]])
        pi=np.percentile(boot*np.exp(fitting._noise_draws(fit,len(boot))),[2.5,97.5]); pcover[lab]+=pi[0]<=actual<=pi[1]; ri=pi if bound else p["interval"]; rcover[lab]+=ri[0]<=actual<=ri[1]; ucover[lab]+=min(pi[0],p["interval"][0])<=actual<=max(pi[1],p["interval"][1]); errs[lab].append(p["loss"]/law.loss(N,D)-1); hws[lab].append(p["half_width"])
print("at a bound", atb); print("forms", {f: forms.count(f) for f in set(forms)})
for lab,_,_ in T:
    e=np.abs(errs[lab]); print(f"{lab}: coverage {cover[lab]}/{K} (percentile {pcover[lab]}/{K}, rule {rcover[lab]}, union {ucover[lab]}), median |error| {100*np.median(e):.2f}%, max {100*e.max():.2f}%, median half-width {100*np.median(hws[lab]):.1f}%")
