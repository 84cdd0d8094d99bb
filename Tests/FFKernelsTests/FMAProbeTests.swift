import XCTest
@testable import FFKernels

final class FMAProbeTests: XCTestCase {
    /// The probe runs the variant of this build's vector width and reports a positive, finite
    /// rate (its value is the machine's, so only its form is checked).
    func testProbeReportsThisBuildsWidth() {
        let p = FMAThroughput.measure(seconds: 0.002, repeats: 2)
        XCTAssertEqual(p.lanes, lanes == 16 ? 16 : (lanes == 8 ? 8 : 4))
        XCTAssertTrue(p.laneFMAsPerSecond.isFinite && p.laneFMAsPerSecond > 0, "\(p.laneFMAsPerSecond)")
        XCTAssertEqual(p.gflops, 2 * p.laneFMAsPerSecond / 1e9, accuracy: 1e-9 * p.gflops)
    }
}
