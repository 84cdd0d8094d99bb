import FFCore

/// Rows per worker below which a layer-norm loop stays on one thread.
let layerNormGrain = 32

/// y(M,C) = (x - mean) * rstd * weight + bias, over the last dimension. Saves mean(M), rstd(M).
/// Rows are split over `threads` workers; each row is computed as on one thread.
public func layerNormForward(
    _ y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>,
    rstd: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
    M: Int, C: Int, eps: Float = 1e-5, threads: Int = 1
) {
    parallelChunks(M, threads: threads, grain: layerNormGrain) { rows in
        layerNormRows(y, mean: mean, rstd: rstd, x, weight: weight, bias: bias, rows: rows, C: C, eps: eps)
    }
}

private func layerNormRows(
    _ y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>,
    rstd: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
    rows: Range<Int>, C: Int, eps: Float
) {
    for m in rows {
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
/// dx is split over rows and dweight, dbias over columns, each column still summed over the rows
/// in order: the result has the same bits for any number of `threads`.
public func layerNormBackward(
    dx: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>,
    dbias: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
    x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
    mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>, M: Int, C: Int,
    threads: Int = 1
) {
    parallelChunks(M, threads: threads, grain: layerNormGrain) { rows in
        for m in rows {
            let xr = x + m * C, dyr = dy + m * C, dxr = dx + m * C
            let mu = mean[m], r = rstd[m]
            // dnorm = dy * weight; dx = r * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat))
            var sumD: Float = 0, sumDX: Float = 0
            for c in 0..<C {
                let xhat = (xr[c] - mu) * r
                let dn = dyr[c] * weight[c]
                sumD += dn
                sumDX += dn * xhat
            }
            let mD = sumD / Float(C), mDX = sumDX / Float(C)
            for c in 0..<C {
                let xhat = (xr[c] - mu) * r
                dxr[c] += r * (dyr[c] * weight[c] - mD - xhat * mDX)
            }
        }
    }
    // Columns need enough rows each to pay for a dispatch: M rows of a few columns per worker.
    parallelRanges(C, threads: M * C >= 4096 * threads ? threads : 1, grain: 8) { cols in
        for m in 0..<M {
            let xr = x + m * C, dyr = dy + m * C
            let mu = mean[m], r = rstd[m]
            for c in cols {
                let xhat = (xr[c] - mu) * r
                dweight[c] += dyr[c] * xhat
                dbias[c] += dyr[c]
            }
        }
    }
}
