import FFCore
import FFKernels
import FFTestSupport
import Foundation
