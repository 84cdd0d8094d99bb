/// A named tensor inside a flat buffer.
public struct TensorInfo: Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    /// Offset in elements from the start of the flat buffer.
    public var offset: Int
    /// Whether AdamW applies weight decay (weight matrices and embeddings: yes; biases, norms, R: no).
    public var decays: Bool
    public var count: Int { shape.reduce(1, *) }
    public var range: Range<Int> { offset..<(offset + count) }
}

/// The names, shapes and offsets of every parameter: the one table that buckets, checkpoint
/// shards and optimizer partitions are cut from.
public struct ParameterLayout: Sendable, Equatable {
    public private(set) var tensors: [TensorInfo] = []
    public private(set) var count = 0
    private var index: [String: Int] = [:]

    public init() {}

    @discardableResult
    public mutating func add(_ name: String, _ shape: [Int], decays: Bool) -> TensorInfo {
        precondition(index[name] == nil, "duplicate parameter \(name)")
        let t = TensorInfo(name: name, shape: shape, offset: count, decays: decays)
        index[name] = tensors.count
        tensors.append(t)
        count += t.count
        return t
    }

    public subscript(name: String) -> TensorInfo? { index[name].map { tensors[$0] } }
}

/// One zero-initialised Float allocation that lives as long as its owner.
public final class FlatBuffer: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    public init(count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { pointer.deallocate() }

    public func zero() { pointer.update(repeating: 0, count: count) }
    public subscript(i: Int) -> Float {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }
    public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
}

/// Hands out pieces of one big allocation, all sized at start-up (llm.c's activation arena).
public final class Arena {
    private var sizes: [Int] = []
    private var buffer: FlatBuffer?

    public init() {}

    /// Reserves `n` floats and returns a handle to resolve after `commit()`.
    public func reserve(_ n: Int) -> Int {
        sizes.append(n)
        return sizes.count - 1
    }

    private var offsets: [Int] = []
    public func commit() {
        var off = 0
        offsets = sizes.map { s in
            defer { off += (s + 15) / 16 * 16 }; return off
        }
        buffer = FlatBuffer(count: off)
    }

    public func pointer(_ handle: Int) -> UnsafeMutablePointer<Float> {
        guard let buffer else { preconditionFailure("Arena used before commit") }
        return buffer.pointer + offsets[handle]
    }

    public var floats: Int { buffer?.count ?? 0 }
}
