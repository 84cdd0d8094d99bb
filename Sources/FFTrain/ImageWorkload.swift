import FFCore
import Foundation
import FFData
import FFDistributed
import FFKernels
import FFModel

/// A vision transformer classifier on IDX image datasets.
public final class ImageWorkload: ModelWorkload {
    public let model: VisionTransformer
    let replicas: ModelReplicas<VisionTransformer>?
    let config: TrainConfig
    let microBatch: Int
    public let classes: Int
    let trainData: ImageDataset
    /// Dataset indices of the training split and of the valid split (a hold-out of the training
    /// file, or all of a separate file), and the pipelines that read them.
    let trainIndices: [Int]
    let validIndices: [Int]
    let trainPipeline: ImagePipeline
    let validPipeline: ImagePipeline?
    let testPipeline: ImagePipeline
    let images: UnsafeMutablePointer<Float>  // (B, Ch, S, S)
    let targets: UnsafeMutablePointer<Float>  // (B, K)
    /// Per-channel normalisation in use (configured or measured).
    public let mean: [Float], std: [Float]

    init(config: TrainConfig, microBatch: Int) throws {
        self.config = config
        self.microBatch = microBatch
        let d = config.data
        let train = try ImageDataset(images: config.dataPath(d.train), labels: config.dataPath(d.trainLabels))
        let test = try ImageDataset(images: config.dataPath(d.test), labels: config.dataPath(d.testLabels))
        let valid =
            d.valid.isEmpty
            ? nil : try ImageDataset(images: config.dataPath(d.valid), labels: config.dataPath(d.validLabels))
        guard train.height == train.width else {
            throw DataError(train.imagesPath, "images are \(train.height)x\(train.width); the ViT needs square images")
        }
        for other in [test] + (valid.map { [$0] } ?? []) {
            guard (other.height, other.width, other.channels) == (train.height, train.width, train.channels) else {
                throw DataError(
                    other.imagesPath,
                    "images are \(other.height)x\(other.width)x\(other.channels), the "
                        + "training images \(train.height)x\(train.width)x\(train.channels)")
            }
        }
        let classes = d.classes ?? train.labelRange
        for ds in [train, test] + (valid.map { [$0] } ?? []) where ds.labelRange > classes {
            throw DataError(
                ds.imagesPath,
                "has label \(ds.labelRange - 1), outside the \(classes) classes "
                    + "(data.classes)")
        }
        self.classes = classes
        trainData = train
        guard d.validHoldout < train.count else {
            throw ConfigError(
                "\(config.source): data.valid_holdout (\(d.validHoldout)) must be smaller than the "
                    + "\(train.count) training images")
        }
        if d.validHoldout > 0 {
            let order = EpochSampler(count: train.count, seed: config.run.seed ^ 0x7A11D, globalBatch: 1).order(
                epoch: 0)
            validIndices = order.suffix(d.validHoldout).sorted()
            trainIndices = order.prefix(train.count - d.validHoldout).sorted()
        } else {
            trainIndices = Array(0..<train.count)
            validIndices = valid.map { Array(0..<$0.count) } ?? []
        }
        let measured = (d.mean == nil || d.std == nil) ? train.channelStatistics(trainIndices) : nil
        mean = d.mean ?? measured!.mean
        std = d.std ?? measured!.std
        guard mean.count == train.channels && std.count == train.channels else {
            throw ConfigError(
                "\(config.source): data.mean/std need \(train.channels) entries (one per channel), got "
                    + "\(mean.count)/\(std.count)")
        }
        let (mean, std, pool) = (self.mean, self.std, trainIndices)
        let pipeline = { (data: ImageDataset) in
            ImagePipeline(
                data: data, classes: classes, mean: mean, std: std, augment: config.augment,
                seed: config.run.seed, partnerPool: pool)
        }
        trainPipeline = pipeline(train)
        testPipeline = pipeline(test)
        validPipeline = d.validHoldout > 0 ? trainPipeline : valid.map(pipeline)
        let vit = config.model.vitConfig(imageSize: train.height, channels: train.channels, classes: classes)
        if let p = vit.problems().first { throw ConfigError("\(config.source): \(p)") }
        let side = train.height / max(config.model.patch, 1)
        let window = config.model.patchWindow
        try MemoryBudget.check(
            MemoryBudget.estimate(
                config, microBatch: microBatch, tokens: side * side + 1,
                outputs: classes, inputs: train.channels * window * window),
            source: config.source, threadCopies: config.train.splitsSamples(microBatch: microBatch))
        let model = VisionTransformer(config: vit, maxBatch: microBatch, threads: config.train.threads)
        self.model = model
        replicas = Self.makeReplicas(config, microBatch: microBatch) {
            VisionTransformer(config: vit, maxBatch: $0, sharedParams: model.params)
        }
        images = .allocate(capacity: microBatch * trainPipeline.imageFloats)
        targets = .allocate(capacity: microBatch * classes)
    }

    deinit { images.deallocate(); targets.deallocate() }

    public var trainCount: Int { trainIndices.count }
    public var unitsPerSample: Int { 1 }
    public var unit: String { "images" }
    public var dataDescription: String {
        let s = trainData.height
        return "\(classes) classes, \(trainIndices.count) training images of \(s)x\(s)x\(trainData.channels)"
    }
    public var modelJSON: String {
        config.modelJSON(
            outputs: classes, imageSize: trainData.height, channels: trainData.channels,
            mean: mean, std: std)
    }
    public var evalSplits: [String] { validPipeline == nil ? ["test"] : ["valid", "test"] }

    public func trainForward(
        samples: ArraySlice<Int>, epoch: Int, keys: UnsafePointer<UInt64>, lossScale: Float
    ) -> Double {
        let n = trainPipeline.imageFloats
        for (row, s) in samples.enumerated() {
            trainPipeline.trainSample(
                trainIndices[s], epoch: epoch, pixels: images + row * n, target: targets + row * classes)
        }
        guard let replicas else {
            return model.forward(
                images: images, targets: targets, batch: samples.count,
                mode: .train(lossScale: lossScale, dropoutKeys: keys))
        }
        let (images, targets, K) = (self.images, self.targets, classes)
        return replicas.forward(batch: samples.count) { copy, slice in
            copy.forward(
                images: images + slice.lowerBound * n, targets: targets + slice.lowerBound * K,
                batch: slice.count, mode: .train(lossScale: lossScale, dropoutKeys: keys + slice.lowerBound))
        }
    }

    func split(_ name: String) throws -> (ImagePipeline, [Int]) {
        switch name {
        case "test": return (testPipeline, Array(0..<testPipeline.data.count))
        case "valid":
            guard let validPipeline else {
                throw ConfigError(
                    "\(config.source): no valid split (set data.valid_holdout, or data.valid and "
                        + "data.valid_labels)")
            }
            return (validPipeline, validIndices)
        case "train": return (trainPipeline, trainIndices)
        default: throw ConfigError("unknown split '\(name)' (valid, test or train)")
        }
    }

    /// Loss, top-1 and top-5 accuracy and the confusion matrix (rows: true class, columns:
    /// predicted), reduced over ranks.
    public func evaluate(
        split name: String, step: Int, comm: Communicator, maxBatches: Int, stride: Int?
    ) throws -> EvalResult {
        let (pipeline, indices) = try split(name)
        let K = classes, n = pipeline.imageFloats
        // [nll, count, top-1 hits, top-5 hits, confusion K x K]: one allreduce.
        var sums = [Double](repeating: 0, count: 4 + K * K)
        var first = comm.rank * microBatch, batches = 0
        while first < indices.count && (maxBatches == 0 || batches < maxBatches) {
            let b = min(microBatch, indices.count - first)
            for row in 0..<b {
                pipeline.evalSample(indices[first + row], pixels: images + row * n, target: targets + row * K)
            }
            sums[0] += model.forward(images: images, targets: targets, batch: b, mode: .eval)
            for row in 0..<b {
                let label = pipeline.data.label(indices[first + row])
                let z = model.logits + row * K
                var predicted = 0, above = 0
                for k in 0..<K {
                    if z[k] > z[predicted] { predicted = k }
                    if z[k] > z[label] { above += 1 }
                }
                sums[1] += 1
                if above == 0 { sums[2] += 1 }
                if above < 5 { sums[3] += 1 }
                sums[4 + label * K + predicted] += 1
            }
            first += microBatch * comm.size
            batches += 1
        }
        try comm.allreduceSum(&sums, count: sums.count)
        let count = max(sums[1], 1)
        var r = EvalResult(step: step, split: name, loss: sums[0] / count)
        r.images = Int(sums[1])
        r.top1 = sums[2] / count
        r.top5 = sums[3] / count
        r.confusion = (0..<K).map { t in (0..<K).map { p in Int(sums[4 + t * K + p]) } }
        return r
    }

    public func annotateFinal(_ result: inout EvalResult) {}

    public func analysisForward(split name: String, first: Int, samples: Int) throws -> Int {
        let (pipeline, indices) = try split(name)
        let b = min(samples, indices.count - first, microBatch)
        guard b >= 1 else { throw ConfigError("analyze: no image \(first) to analyse in the \(name) split") }
        for row in 0..<b {
            pipeline.evalSample(
                indices[first + row], pixels: images + row * pipeline.imageFloats,
                target: targets + row * classes)
        }
        _ = model.forward(images: images, targets: targets, batch: b, mode: .eval)
        return b
    }
}
