/// y(M,C) = (x - mean) * rstd * weight + bias, over the last dimension. Saves mean(M), rstd(M).
public func layerNormForward(_ y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>,
                             rstd: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                             weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                             M: Int, C: Int, eps: Float = 1e-5) {
    for m in 0..<M {
        let xr = x + m * C, yr = y + m * C
        var s: Float = 0
        for c in 0..<C { s += xr[c] }
        let mu = s / Float(C)
        var v: Float = 0
        for c in 0..<C { let d = xr[c] - mu; v += d * d }
        let r = 1 / (v / Float(C) + eps).squareRoot()
        for c in 0..<C { yr[c] = (xr[c] - mu) * r * weight[c] + bias[c] }
        mean[m] = mu
        rstd[m] = r
    }
}

/// Accumulates dx(M,C), dweight(C), dbias(C) from dy(M,C) and the saved x, mean, rstd.
public func layerNormBackward(dx: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>,
                              dbias: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                              x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                              mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>, M: Int, C: Int) {
    for m in 0..<M {
        let xr = x + m * C, dyr = dy + m * C, dxr = dx + m * C
        let mu = mean[m], r = rstd[m]
        // dnorm = dy * weight; dx = r * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat))
        var sumD: Float = 0, sumDX: Float = 0
        for c in 0..<C {
            let xhat = (xr[c] - mu) * r
            let dn = dyr[c] * weight[c]
            sumD += dn
            sumDX += dn * xhat
            dweight[c] += dyr[c] * xhat
            dbias[c] += dyr[c]
        }
        let mD = sumD / Float(C), mDX = sumDX / Float(C)
        for c in 0..<C {
            let xhat = (xr[c] - mu) * r
            dxr[c] += r * (dyr[c] * weight[c] - mD - xhat * mDX)
        }
    }
}
